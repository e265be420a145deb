"""Config loading: strict types, unknown keys, key paths in errors, --set overrides, the shipped file."""

import typing
from pathlib import Path

import attrs
import pytest

from uipd.config import Config, ConfigError, SourceConfig, from_dict, load
from uipd.config.load import _SECTIONS

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_protocol():
    c = from_dict({})
    assert (c.server.port, c.server.paths, c.server.default_topics) == (5000, ("/", "/ws"), ("all",))
    assert (c.heartbeat.interval, c.heartbeat.timeout) == (10.0, 30.0)
    assert (c.api.host, c.api.port, c.api.key) == ("127.0.0.1", 5001, "")
    assert c.server.max_message_bytes == 65536 and c.server.max_queue_bytes == 1048576
    assert c.server.slow_consumer == "resync"
    assert (c.history.size, c.history.ttl, c.history.max_replay) == (1000, 300.0, 500)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"server": {"port": "5000"}}, r"server\.port: expected an integer, got a string"),
        ({"server": {"port": 5000.0}}, r"server\.port: expected an integer, got a number"),
        ({"server": {"prot": 1}}, r"server: unknown key 'prot'"),
        ({"server": {"paths": "/"}}, r"server\.paths: expected an array, got a string"),
        ({"server": {"paths": []}}, r"server: paths must list at least one path"),  # was an IndexError later
        ({"server": {"topics": ["a", 1]}}, r"server\.topics\[1\]: expected a string"),
        ({"server": {"slow_consumer": "drop"}}, r"server\.slow_consumer: expected one of 'resync', 'disconnect'"),
        ({"server": {"port": 70000}}, r"server: port must be a port number"),
        ({"server": {"drain_timeout": 0}}, r"server: 'drain_timeout' must be > 0: 0"),
        ({"server": {"rate_limit": -1}}, r"server: 'rate_limit' must be >= 0: -1"),
        ({"heartbeat": {"interval": True}}, r"heartbeat\.interval: expected a number, got a boolean"),
        ({"heartbeat": {"interval": 10, "timeout": 5}}, r"heartbeat\.timeout \(5\.0\) must be longer"),
        ({"api": {"key": 123}}, r"api\.key: expected a string"),
        ({"log": {"level": "loud"}}, r"log\.level: expected one of"),
        ({"history": {"size": -1}}, r"history: 'size' must be >= 0: -1"),
        ({"history": {"size": 10.0}}, r"history\.size: expected an integer, got a number"),
        ({"history": {"ttl": 0}}, r"history: 'ttl' must be > 0: 0"),
        ({"history": {"max_replay": "5"}}, r"history\.max_replay: expected an integer, got a string"),
        ({"history": {"keep": 1}}, r"history: unknown key 'keep'"),
        ({"bogus": {}}, r"unknown section\(s\) 'bogus'"),
        ({"sources": {"a": {}}}, r"sources\.a\.plugin: required key missing"),
        ({"sources": {"a": 5}}, r"sources\.a: expected a table"),
    ],
)
def test_wrong_values_are_errors_naming_file_and_key(raw, message):
    with pytest.raises(ConfigError, match=r"^cfg\.toml: .*" + message):
        from_dict(raw, file="cfg.toml")


def test_integers_are_accepted_for_durations():
    assert from_dict({"server": {"drain_timeout": 3}}).server.drain_timeout == 3.0


def test_load_file_and_overrides(tmp_path):
    f = tmp_path / "u.toml"
    f.write_text('[server]\nport = 6000\n[sources.s]\nplugin = "file"\npath = "x.json"\n')
    c = load(f, ["server.port=6001", 'server.welcome="hi there"', 'sources.s.path="/data/y.json"', "heartbeat.interval=2"])
    assert c.server.port == 6001 and c.server.welcome == "hi there" and c.heartbeat.interval == 2.0
    assert c.sources[0].options == {"path": "/data/y.json"}
    assert c.path == str(f)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("server.welcome=hello", "the value must be TOML"),
        ("port=1", "expected section.key=value"),
        ("server.port", "expected section.key=value"),
        ('server.port="5000"', r"server\.port: expected an integer"),
    ],
)
def test_bad_overrides(tmp_path, override, message):
    f = tmp_path / "u.toml"
    f.write_text("")
    with pytest.raises(ConfigError, match=message):
        load(f, [override])


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load(bad)


def test_the_shipped_config_is_valid():
    c = load(ROOT / "uipd.toml")
    assert isinstance(c, Config)
    assert [s.plugin for s in c.sources] == ["sim"]


def _number_keys():
    """Every float key of every section, and of a [sources.NAME] table: found, not listed, so a
    key added later is covered too."""
    tables = {**_SECTIONS, "sources.s": SourceConfig}
    for section, cls in tables.items():
        hints = typing.get_type_hints(cls)
        yield from ((section, f.name) for f in attrs.fields(cls) if hints[f.name] is float)


NUMBER_KEYS = list(_number_keys())


def test_the_number_keys_are_found():
    assert {("server", "drain_timeout"), ("auth", "jwt_leeway"), ("heartbeat", "timeout"), ("api", "request_timeout"),
            ("broker", "lease_ttl"), ("sources.s", "restart_max_backoff")} <= set(NUMBER_KEYS)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(("section", "key"), NUMBER_KEYS)
def test_nan_and_infinity_are_refused_for_every_number_key(tmp_path, section, key, value):
    """NaN compares false with every bound, so it passed ``value <= 0``: a NaN request_timeout
    killed the daemon at its first HTTP request, a NaN or inf jwt_leeway let expired tokens in,
    an inf heartbeat.timeout never dropped a dead client.  No key gives infinity a meaning."""
    f = tmp_path / "u.toml"
    f.write_text('[sources.s]\nplugin = "file"\npath = "x.json"\n')
    with pytest.raises(ConfigError, match=rf"^{f}: {section}: '{key}' must be a finite number: -?(nan|inf)$"):
        load(f, [f"{section}.{key}={value}"])


def test_the_two_listeners_may_not_share_a_port():
    for server, api in (({"port": 6000}, {"port": 6000}), ({"host": "127.0.0.1", "port": 6000}, {"host": "0.0.0.0", "port": 6000}),
                        ({"host": "", "port": 6000}, {"host": "::1", "port": 6000})):
        with pytest.raises(ConfigError, match=r"^cfg\.toml: server\.port and api\.port are both 6000"):
            from_dict({"server": server, "api": api}, file="cfg.toml")
    # different addresses may share a port, and port 0 is a free port picked for each listener
    assert from_dict({"server": {"host": "127.0.0.1", "port": 6000}, "api": {"host": "127.0.0.2", "port": 6000}}).api.port == 6000
    assert from_dict({"server": {"port": 0}, "api": {"port": 0}}).api.port == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "must be a redis://, rediss:// or unix:///PATH URL"),
        ("http://127.0.0.1:6379/0", "must be a redis://, rediss:// or unix:///PATH URL"),
        ("unix://", "must be a redis://, rediss:// or unix:///PATH URL"),
        ("redis://127.0.0.1:99999/0", "must be a Redis URL: Port out of range"),
        ("redis://127.0.0.1:six/0", "must be a Redis URL: Port could not be cast"),
    ],
)
def test_a_broker_url_redis_cannot_use_is_refused_at_load(url, message):
    # was accepted, then the log said "Redis unreachable ()" forever
    with pytest.raises(ConfigError, match=rf"^cfg\.toml: broker: 'url' {message}"):
        from_dict({"broker": {"kind": "redis", "url": url}}, file="cfg.toml")


def test_broker_urls_of_each_scheme_are_accepted():
    for url in ("redis://127.0.0.1:6379/0", "rediss://user:pw@redis.example:6380/1", "unix:///run/redis.sock?db=2"):
        assert from_dict({"broker": {"kind": "redis", "url": url}}).broker.url == url
