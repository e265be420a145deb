"""What waking a trio task per readable socket costs, against one poller reading every ready socket
(the idle reader, uipd/server/idle.py): N socket pairs, 20 rounds of 6 bytes to each, CPU per event.

    .venv/bin/python bench/idle_wake.py
"""
import trio, socket, os, time, select
N=2000; ROUNDS=20
pairs=[socket.socketpair() for _ in range(N)]
for a,b in pairs: a.setblocking(False); b.setblocking(False)
async def reader(fd, counter):
    while True:
        await trio.lowlevel.wait_readable(fd)
        os.read(fd, 16384)
        counter[0]+=1
async def main_tasks():
    counter=[0]
    async with trio.open_nursery() as n:
        for a,b in pairs: n.start_soon(reader, a.fileno(), counter)
        await trio.sleep(0.1)
        t=time.process_time()
        for r in range(ROUNDS):
            for a,b in pairs: os.write(b.fileno(), b"123456")
            while counter[0] < (r+1)*N: await trio.sleep(0.001)
        dt=time.process_time()-t
        n.cancel_scope.cancel()
    return dt
async def main_poller():
    ep=select.epoll()
    fds={}
    for a,b in pairs: ep.register(a.fileno(), select.EPOLLIN); fds[a.fileno()]=0
    counter=[0]
    async def poll():
        while True:
            await trio.lowlevel.wait_readable(ep.fileno())
            for fd,ev in ep.poll(0, 1024):
                os.read(fd,16384); counter[0]+=1
    async with trio.open_nursery() as n:
        n.start_soon(poll)
        await trio.sleep(0.1)
        t=time.process_time()
        for r in range(ROUNDS):
            for a,b in pairs: os.write(b.fileno(), b"123456")
            while counter[0] < (r+1)*N: await trio.sleep(0.001)
        dt=time.process_time()-t
        n.cancel_scope.cancel()
    return dt
def writes_only():
    t=time.process_time()
    for r in range(ROUNDS):
        for a,b in pairs: os.write(b.fileno(), b"123456")
        for a,b in pairs: os.read(a.fileno(),16384)
    return time.process_time()-t
w=writes_only()
print("write+read only us/event", w/(N*ROUNDS)*1e6)
print("task per fd us/event", trio.run(main_tasks)/(N*ROUNDS)*1e6)
print("one poller us/event", trio.run(main_poller)/(N*ROUNDS)*1e6)
