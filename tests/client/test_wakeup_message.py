"""Wake-up message format and the ``[wakeup]`` configuration table (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.client.config import ConfigError
from signer.client.wakeup import KINDS, BadMessage, WakeMessage, format_message, parse_message, retry_policy
from signer.client.wakeup_config import WakeupConfig, parse_wakeup_table


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"kind":"emailcerts","id":123}', WakeMessage("emailcerts", 123)),
        (b'{"kind": "gpg"}', WakeMessage("gpg", None)),
        (b'{"kind": "crl", "id": null}', WakeMessage("crl", None)),
        (b"emailcerts 123", WakeMessage("emailcerts", 123)),
        (b"  orgdomaincerts\t7\r\n", WakeMessage("orgdomaincerts", 7)),
        (b"revoke", WakeMessage("revoke", None)),
    ],
)
def test_valid_messages(data: bytes, expected: WakeMessage) -> None:
    """JSON and plain-text messages give the kind and the optional id."""
    assert parse_message(data) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"certificates 1", "unknown kind"),
        (b"EMAILCERTS 1", "unknown kind"),
        (b"emailcerts -1", "positive integer"),
        (b"emailcerts 0", "positive integer"),
        (b"emailcerts 1 2", "KIND ID"),
        (b"emailcerts \xd9\xa3", "positive integer"),  # Arabic-Indic digit three
        (b"\xff\xfe", "not UTF-8"),
        (b'{"kind":"emailcerts","id":"12"}', "positive integer"),
        (b'{"kind":"emailcerts","id":true}', "positive integer"),
        (b'{"kind":"emailcerts","id":1.5}', "positive integer"),
        (b'{"id":1}', "without 'kind'"),
        (b'{"kind":"gpg","table":"x"}', "unknown key"),
        (b'{"kind":', "not valid JSON"),
        (b'["gpg", 1]', "unknown kind"),
        (b"gpg " + b"1" * 2000, "longer than"),
    ],
)
def test_bad_messages(data: bytes, reason: str) -> None:
    """Everything outside the format is refused with a reason."""
    with pytest.raises(BadMessage, match=reason):
        parse_message(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_bad_message(data: bytes) -> None:
    """No input makes the parser raise anything other than BadMessage."""
    try:
        message = parse_message(data)
    except BadMessage:
        return
    assert message.kind in KINDS


@given(st.sampled_from(KINDS), st.one_of(st.none(), st.integers(min_value=1, max_value=2**63 - 1)))
def test_format_round_trips(kind: str, row_id: int | None) -> None:
    """What ``signer notify`` publishes parses back to the same message."""
    assert parse_message(format_message(kind, row_id)) == WakeMessage(kind, row_id)


def test_retry_policy_grows_caps_and_jitters() -> None:
    """Delays double from the initial value, stop at the cap, and carry at most 25 % jitter."""
    policy = retry_policy(0.5, 8.0)
    for attempt, base in ((0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (30, 8.0)):
        delays = [policy(attempt) for _ in range(50)]
        assert all(base <= d <= base * 1.25 for d in delays), (attempt, delays[:3])
        assert len(set(delays)) > 1


# -- configuration -------------------------------------------------------------


def test_missing_table_means_off() -> None:
    """No [wakeup] table: source off, polling stays at the normal interval."""
    config = parse_wakeup_table(None, "/etc/signer/client.toml")
    assert config == WakeupConfig()
    assert not config.enabled and config.polling_interval(2.7) == 2.7


def test_redis_url_and_defaults(tmp_path: Path) -> None:
    """A redis URL gives host, port, db and password; fallback 60 s by default."""
    config = parse_wakeup_table(
        {"source": "redis", "redis_url": "redis://:s%40cret@cache.example:6380/2", "redis_channel": "jobs"},
        tmp_path / "c.toml",
    )
    assert config.enabled and config.polling_interval(2.7) == 60.0
    redis = config.redis
    assert (redis.host, redis.port, redis.db, redis.password, redis.channel) == ("cache.example", 6380, 2, "s@cret", "jobs")


def test_amqp_keys_and_password_file(tmp_path: Path) -> None:
    """AMQP single keys; the password is read from a file relative to the configuration."""
    (tmp_path / "amqp.pw").write_text("hunter2\n")
    config = parse_wakeup_table(
        {
            "source": "amqp", "amqp_host": "mq", "amqp_port": 5673, "amqp_vhost": "cacert",
            "amqp_user": "signer", "amqp_password_file": "amqp.pw", "amqp_queue": "signer-jobs",
            "amqp_exchange": "signer", "fallback_interval": 120, "backoff_max": 30,
        },
        tmp_path / "client.toml",
    )
    amqp = config.amqp
    assert (amqp.host, amqp.port, amqp.vhost, amqp.user, amqp.password) == ("mq", 5673, "cacert", "signer", "hunter2")
    assert (amqp.queue, amqp.exchange) == ("signer-jobs", "signer")
    assert config.fallback_interval == 120.0 and config.backoff_max == 30.0


def test_amqp_url_vhost_is_url_decoded(tmp_path: Path) -> None:
    """amqp://user:pw@host/%2F names the vhost "/" (RabbitMQ's URI rules)."""
    config = parse_wakeup_table({"source": "amqp", "amqp_url": "amqp://u:p@h:5672/%2F"}, tmp_path / "c.toml")
    assert (config.amqp.vhost, config.amqp.user, config.amqp.password) == ("/", "u", "p")


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"source": "kafka"}, "wakeup.source", "must be one of"),
        ({"fallback_interval": 0}, "wakeup.fallback_interval", "greater than zero"),
        ({"fallback_interval": "60"}, "wakeup.fallback_interval", "expected a number"),
        ({"redis_url": "http://x"}, "wakeup.redis_url", "redis://"),
        ({"redis_url": "redis://x", "redis_port": 1}, "wakeup.redis_port", "not both"),
        ({"redis_port": 70000}, "wakeup.redis_port", "TCP port"),
        ({"redis_channel": ""}, "wakeup.redis_channel", "must not be empty"),
        ({"amqp_url": "amqps://x"}, "wakeup.amqp_url", "amqp://"),
        ({"amqp_queue": "amq.x"}, "wakeup.amqp_queue", "amq."),
        ({"amqp_password_file": "missing.pw"}, "wakeup.amqp_password_file", "cannot read"),
        ({"backoff_initial": 10, "backoff_max": 5}, "wakeup.backoff_max", "below backoff_initial"),
        ({"source": "redis", "redis_hots": "x"}, "wakeup.redis_hots", "unknown key"),
    ],
)
def test_configuration_errors_name_file_and_key(tmp_path: Path, table: dict, key: str, problem: str) -> None:
    """Every mistake raises ConfigError with the file, the dotted key and what is wrong."""
    source = tmp_path / "client.toml"
    with pytest.raises(ConfigError, match=problem) as info:
        parse_wakeup_table(table, source)
    assert info.value.source == str(source) and info.value.key == key
    assert str(info.value).startswith(f"{source}: {key}: ")
