"""uipd-sim: a uipd source plugin that simulates Ho Chi Minh City traffic data.

:mod:`uipd_sim.city` is the pure, seeded model (no I/O, no trio); :mod:`uipd_sim.plugin`
is the uipd hook implementation whose Source drives the model with trio timers.
"""
