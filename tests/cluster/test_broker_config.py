"""The ``[broker]`` bounds on waits for Redis: defaults, and the checks between them."""

import pytest

from uipd.config import BrokerConfig, ConfigError, from_dict


def test_every_wait_on_redis_has_a_bound_by_default():
    b = BrokerConfig()
    assert b.command_timeout < b.lease_ttl / 3 and b.ping_interval > 0 and b.publish_timeout > b.command_timeout


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"lease_ttl": 1.5, "command_timeout": 0.6}, "broker.command_timeout (0.6) must be at most a third of broker.lease_ttl (1.5)"),
        ({"command_timeout": 1.0, "publish_timeout": 1.0}, "broker.publish_timeout (1.0) must be longer than broker.command_timeout (1.0)"),
        ({"ping_interval": 0}, "'ping_interval' must be > 0: 0"),
    ],
)
def test_bounds_that_cannot_work_are_refused(broker, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict({"broker": broker}, file="t.toml")
