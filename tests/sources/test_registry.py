"""Plugin discovery through real entry points, and the checks applied to [sources.NAME] tables."""

import sys

import pytest
import trustme
from attrs import field, frozen
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from uipd.config import ConfigError, UnreadableFileError, from_dict, structure_strict
from uipd.plugin_tools import positive
from uipd.plugin import SourceType, hookimpl
from uipd.sources.registry import PluginRegistry, build_sources, check_config, offered_topics


def test_plugins_are_found_through_installed_entry_points():
    registry = PluginRegistry.discover()
    assert registry.providers["counter"] == "counter"  # the test plugin distribution
    assert registry.providers["file"] == "file"  # bundled with uipd
    assert registry.providers["sim"] == "sim"  # plugins/uipd-sim


def test_a_broken_plugin_is_reported_and_the_others_still_load(monkeypatch):
    monkeypatch.setenv("UIPD_TESTPLUGIN_BROKEN", "1")
    monkeypatch.delitem(sys.modules, "uipd_testplugin.broken", raising=False)  # imported fine earlier
    registry = PluginRegistry.discover()
    assert [b.name for b in registry.broken] == ["broken"]
    assert "fails to import on purpose" in registry.broken[0].error
    assert "counter" in registry.types
    config = from_dict({"sources": {"x": {"plugin": "broken"}}}, file="t.toml")
    with pytest.raises(ConfigError, match="sources.x.plugin: no source plugin 'broken' .*broken: cannot import"):
        build_sources(config, registry)


def test_a_plugin_whose_hook_raises_is_reported_by_name():
    from uipd.plugin import hookimpl

    class Plugin:
        @hookimpl
        def uipd_source_types(self):
            raise RuntimeError("boom")

    registry = PluginRegistry.discover([("raiser", Plugin())])
    assert any(b.name == "raiser" and "boom" in b.error for b in registry.broken)
    assert "counter" in registry.types


def test_plugin_options_are_strict_and_errors_name_the_key():
    registry = PluginRegistry.discover()
    for table, message in [
        ({"plugin": "counter", "interval": "fast"}, "sources.c.interval: expected a number"),
        ({"plugin": "counter", "intervall": 1.0}, "sources.c: unknown key 'intervall'"),
        ({"plugin": "counter", "interval": -1.0}, "sources.c: interval must be greater than 0"),
        ({"plugin": "nope"}, "sources.c.plugin: no source plugin 'nope'"),
        ({"plugin": 3}, "sources.c.plugin: expected a string"),
        ({"plugin": "counter", "enabled": "yes"}, "sources.c.enabled: expected true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_sources(from_dict({"sources": {"c": table}}, file="t.toml"), registry)


def test_nan_and_infinity_are_refused_in_plugin_options_too():
    """uipd.plugin_tools.positive (what plugins validate their options with) and the bundled file
    source took NaN: every comparison with it is false."""
    registry = PluginRegistry.discover()
    for table, message in [
        ({"plugin": "file", "path": "x.json", "poll_interval": float("nan")}, "sources.c: 'poll_interval' must be a finite number: nan"),
        ({"plugin": "file", "path": "x.json", "poll_interval": float("inf")}, "sources.c: 'poll_interval' must be a finite number: inf"),
        ({"plugin": "counter", "restart_max_backoff": float("nan")}, "sources.c: 'restart_max_backoff' must be a finite number: nan"),
        ({"plugin": "counter", "restart_max_backoff": 0}, "sources.c: 'restart_max_backoff' must be > 0: 0.0"),
    ]:
        with pytest.raises(ConfigError, match=f"^t.toml: {message}$"):
            build_sources(from_dict({"sources": {"c": table}}, file="t.toml"), registry)

    @frozen
    class Options:
        interval: float = field(default=1.0, validator=positive)

    with pytest.raises(ConfigError, match=r"^t.toml: sources.p: 'interval' must be a finite number: inf$"):
        structure_strict({"interval": float("inf")}, Options, file="t.toml", root="sources.p")


def test_two_sources_may_not_provide_one_topic():
    config = from_dict({"sources": {"a": {"plugin": "counter"}, "b": {"plugin": "counter"}}}, file="t.toml")
    with pytest.raises(ConfigError, match="topic 'counter' is already provided by sources.a"):
        build_sources(config, PluginRegistry.discover())


def test_offered_topics_are_sources_then_server_topics():
    config = from_dict(
        {"server": {"topics": ["extra", "counter"]}, "sources": {"a": {"plugin": "counter"}, "off": {"plugin": "counter", "enabled": False}}},
        file="t.toml",
    )
    built = build_sources(config, PluginRegistry.discover())
    assert [b.name for b in built] == ["a"]
    assert offered_topics(config, built) == ["counter", "extra"]


# -- what a config means (check_config: the one check of check-config, startup and reload) ------


def check(raw, plugins=()):
    return check_config(from_dict(raw, file="t.toml"), PluginRegistry.discover(plugins))


def test_default_topics_must_name_offered_topics():
    with pytest.raises(ConfigError, match=r"^t\.toml: server\.default_topics\[1\]: unknown topic 'cameraz'; known topics: all, counter, extra$"):
        check({"server": {"topics": ["extra"], "default_topics": ["counter", "cameraz"]}, "sources": {"c": {"plugin": "counter"}}})
    checked = check({"server": {"topics": ["extra"], "default_topics": ["extra", "counter"]}, "sources": {"c": {"plugin": "counter"}}})
    assert checked.topics == ["counter", "extra"]


@frozen
class NoOptions:
    pass


class _Runs:
    async def run(self, publisher):
        pass


def plugin_making(make):
    class Plugin:
        @hookimpl
        def uipd_source_types(self):
            return [SourceType("odd", NoOptions, lambda options: make())]

    return ("odd", Plugin())


def _raise(exc):
    raise exc


def _source(**attrs):
    source = _Runs()
    for k, v in attrs.items():
        setattr(source, k, v)
    return source


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _raise(RuntimeError("boom")), r"sources\.s: plugin 'odd' failed to create the source: RuntimeError\('boom'\)"),
        (lambda: _raise(KeyError("k")), r"sources\.s: plugin 'odd' failed to create the source: KeyError\('k'\)"),
        (lambda: _Runs(), r"sources\.s: plugin 'odd' made a source whose topics \(or run\) cannot be read: AttributeError"),
        (lambda: _source(topics="parking"), r"sources\.s: the source's topics must be a tuple of topic names, got 'parking'"),
        (lambda: _source(topics=5), r"sources\.s: the source's topics must be a tuple of topic names, got 5"),
        (lambda: _source(topics=(["a"],)), r"sources\.s: the source declared an invalid topic name \['a'\]"),
        (lambda: type("NoRun", (), {"topics": ("x",)})(), r"sources\.s: plugin 'odd' made a source without a run\(publisher\) method"),
    ],
)
def test_whatever_a_plugin_does_wrong_is_a_config_error_naming_the_source(make, message):
    with pytest.raises(ConfigError, match=r"^t\.toml: " + message):
        check({"sources": {"s": {"plugin": "odd"}}}, plugins=(plugin_making(make),))


def test_auth_errors_name_the_file_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r'^t\.toml: auth\.tokens: mode = "token" needs tokens'):
        check({"auth": {"mode": "token"}})
    with pytest.raises(ConfigError, match=r'^t\.toml: auth\.jwt_key: mode = "jwt" needs jwt_key or jwt_key_file'):
        check({"auth": {"mode": "jwt"}})
    # a file that cannot be read: a start failure of this machine (uipd run exits 1), still a ConfigError
    with pytest.raises(UnreadableFileError, match=rf"^t\.toml: auth\.token_file: cannot read {tmp_path}: Is a directory"):
        check({"auth": {"mode": "token", "token_file": str(tmp_path)}})
    with pytest.raises(UnreadableFileError, match=r"^t\.toml: auth\.jwt_key_file: cannot read .*missing\.pem: No such file"):
        check({"auth": {"mode": "jwt", "jwt_key_file": str(tmp_path / "missing.pem")}})


def test_jwt_keys_are_parsed_at_check_time(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "pub.pem").write_bytes(public_pem)
    (tmp_path / "private.pem").write_bytes(private_pem)
    (tmp_path / "garbage.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    rs256 = {"mode": "jwt", "jwt_algorithm": "RS256"}
    check({"auth": {**rs256, "jwt_key_file": str(tmp_path / "pub.pem")}})
    check({"auth": {**rs256, "jwt_key": public_pem.decode()}})
    with pytest.raises(ConfigError, match=r"^t\.toml: auth\.jwt_key_file: expected an RSA public key \(PEM\): "):
        check({"auth": {**rs256, "jwt_key_file": str(tmp_path / "garbage.pem")}})
    with pytest.raises(ConfigError, match=r"^t\.toml: auth\.jwt_key: expected an RSA public key \(PEM\): "):
        check({"auth": {**rs256, "jwt_key": "a shared secret"}})
    with pytest.raises(ConfigError, match=r"^t\.toml: auth\.jwt_key_file: expected an RSA public key \(PEM\), got a private key"):
        check({"auth": {**rs256, "jwt_key_file": str(tmp_path / "private.pem")}})
    # HS256 with a public key as the secret: refused (it is how algorithm confusion starts)
    with pytest.raises(ConfigError, match=r"^t\.toml: auth\.jwt_key_file: expected an HS256 secret"):
        check({"auth": {"mode": "jwt", "jwt_key_file": str(tmp_path / "pub.pem")}})


def test_tls_files_are_loaded_at_check_time(tmp_path):
    cert = trustme.CA().issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    good = {"tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "key.pem")}
    assert check({"server": good}).tls is not None
    assert check({}).tls is None
    with pytest.raises(ConfigError, match=r"^t\.toml: server\.tls_cert, server\.tls_key: not a PEM certificate chain and its private key"):
        check({"server": {**good, "tls_cert": str(tmp_path / "bad.pem")}})
    with pytest.raises(UnreadableFileError, match=r"^t\.toml: server\.tls_key: cannot read .*nope\.pem: No such file"):
        check({"server": {**good, "tls_key": str(tmp_path / "nope.pem")}})
