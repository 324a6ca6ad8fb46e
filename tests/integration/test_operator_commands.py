"""`orderguard breaker force` and `orderguard hold release` against a real broker and pipeline.

Simulated traffic with a carrier API outage (opens carrier jt) and deliveries the OMS
never reflects (customer holds) is processed by `orderguard run`; the operator
commands are then given as subprocesses, the way an on-call engineer would, and the
resumed run applies them: the breakers topic carries the operator decisions, each
naming the key that signed it. Commands not signed by a configured key (forged,
unsigned, replayed) change nothing and are dead-lettered `unauthenticated_command`.
"""

from __future__ import annotations

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from connectors.broker import free_port
from schemas.commands import sign
from tests.helpers import settings_of
from tests.integration.test_run_live import live_env, ok, orderguard, read_topic

ORDERS = 400
INCIDENTS = ("--incident", "carrier_api_outage", "--incident", "delivery_not_reflected")
OPS_KEY = "integration-ops-key-" + "k" * 24


def records(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(v) for _, v in read_topic(bootstrap, topic)]


def produce_raw(bootstrap: str, topic: str, *values: bytes) -> None:
    """Straight to the control topic, as a misbehaving tool would: no CLI validation."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for v in values:
        producer.produce(topic, value=v)
    assert producer.flush(30) == 0


def test_operator_commands_become_breaker_decisions_and_bad_ones_dead_letters(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    # holds must still stand when the commands arrive (now), months after the recording
    env["ORDERGUARD__BREAKERS__CUSTOMER__EXPIRES_AFTER"] = "3650d"
    env["ORDERGUARD__CONTROL__KEYS__OPS"] = OPS_KEY
    breakers = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__BREAKERS"]
    dead_letters = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__DEAD_LETTERS"]
    control = env["ORDERGUARD__KAFKA__CONTROL_TOPIC"]

    ok(orderguard(env, "simulate", "--orders", str(ORDERS), *INCIDENTS, "--to-kafka"))
    ok(orderguard(env, "run", "--exit-when-caught-up"))
    before = records(broker.bootstrap, breakers)
    assert any(d["key"] == "jt" and d["state"] == "OPEN" for d in before)
    held = sorted({d["key"] for d in before if d["breaker"] == "customer"})
    assert held and all(d["state"] == "HOLD" for d in before if d["breaker"] == "customer")
    customer = held[0]
    other = held[-1] if len(held) > 1 else "C-not-held"  # a forged release targets it

    # the CLI refuses what the pipeline would dead-letter, and sends nothing
    for args, says in [
        (("breaker", "force", "carrier", "fedex", "CLOSED"), "unknown carrier 'fedex'"),
        (("breaker", "force", "carrier", "jt", "SIDEWAYS"), "cannot be forced to 'SIDEWAYS'"),
        (("breaker", "force", "customer", customer, "HALF_OPEN"), "HOLD, RELEASED"),
        (("breaker", "force", "gateway", "stripe", "OPEN"), "unknown breaker kind 'gateway'"),
    ]:
        proc = orderguard(env, *args, "--operator", "alice")
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert says in proc.stderr and "nothing sent" in proc.stderr, proc.stderr
    assert read_topic(broker.bootstrap, control) == []

    forced = ok(
        orderguard(env, "breaker", "force", "carrier", "jt", "CLOSED", "--operator", "alice")
    )
    assert "sent command" in forced and "carrier jt -> CLOSED by alice" in forced
    assert breakers in forced  # the hint: where the decision appears
    released = ok(
        orderguard(env, "hold", "release", customer, "--operator", "bob", "--reason", "refunded")
    )
    assert f"customer {customer} -> RELEASED by bob" in released
    env_carol = {**env, "ORDERGUARD_OPERATOR": "carol"}
    ok(orderguard(env_carol, "breaker", "force", "channel", "pinduoduo", "open"))
    produce_raw(
        broker.bootstrap,
        control,
        b"{not json",
        orjson.dumps(
            {
                "source": "operator",
                "received_at": "2026-03-02T12:00:00Z",
                "event_id": "bad-1",
                "payload": {
                    "command": "breaker_force",
                    "operator": "eve",
                    "kind": "carrier",
                    "key": "jt",
                },
            }
        ),
    )

    # forged: a release signed with a key the pipeline does not have, and an unsigned
    # force of jt; a signed command changed after signing (the operator's name)
    forged_release = {
        "stream": "control",
        "source": "operator",
        "received_at": _now(),
        "event_id": "forged-1",
        "payload": {"command": "hold_release", "operator": "alice", "customer_id": other},
    }
    unsigned = {**forged_release, "event_id": "forged-2"}
    unsigned["payload"] = {
        "command": "breaker_force",
        "operator": "alice",
        "kind": "carrier",
        "key": "jt",
        "state": "HALF_OPEN",
    }
    tampered = sign({**unsigned, "event_id": "forged-3"}, "ops", OPS_KEY.encode())
    tampered["payload"] = {**tampered["payload"], "operator": "mallory"}
    produce_raw(
        broker.bootstrap,
        control,
        orjson.dumps(sign(forged_release, "ops", b"not-the-key-" * 4)),
        orjson.dumps(unsigned),
        orjson.dumps(tampered),
    )

    ok(orderguard(env, "run", "--exit-when-caught-up"))
    after = records(broker.bootstrap, breakers)
    by_operator = {d["key"]: d for d in after if "operator" in d["figures"]}
    assert {k: (d["breaker"], d["state"], d["reason"]) for k, d in by_operator.items()} == {
        "jt": ("carrier", "CLOSED", "operator alice (key ops): forced CLOSED"),
        customer: ("customer", "RELEASED", "operator bob (key ops): refunded"),
        "pinduoduo": ("channel", "OPEN", "operator carol (key ops): forced OPEN"),
    }
    assert {d["figures"]["signer"] for d in by_operator.values()} == {"ops"}
    # the forged commands changed nothing: three operator decisions in all (no forced
    # HALF_OPEN of jt), and none releasing the other held customer
    assert len([d for d in after if "operator" in d["figures"]]) == 3
    assert not [d for d in after if d["key"] == other and d["state"] == "RELEASED"]
    jt = by_operator["jt"]
    assert (jt["figures"]["forced"], jt["action"]) == (True, "resume")
    assert jt["figures"]["command_id"] in forced  # the CLI printed the id it sent
    release = by_operator[customer]
    assert (release["previous_state"], release["figures"]["forced"]) == ("HOLD", False)

    bad = [d for d in records(broker.bootstrap, dead_letters) if d["stream"] == "control"]
    assert sorted(d["reason"] for d in bad) == [
        "not_json",
        *["unauthenticated_command"] * 4,  # the hand-made one is unsigned too
    ]
    assert all(d["origin"]["topic"] == control for d in bad)

    # replayed: the signed commands produced again change nothing and are dead letters
    sent = [v for _, v in read_topic(broker.bootstrap, control)]
    signed = [v for v in sent if b'"key_id":"ops"' in v and b'"forged-' not in v]
    assert len(signed) == 3
    produce_raw(broker.bootstrap, control, *signed)
    ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert len(records(broker.bootstrap, breakers)) == len(after)
    bad = [d for d in records(broker.bootstrap, dead_letters) if d["stream"] == "control"]
    replays = [d for d in bad if "already applied" in d["error"]]
    assert len(replays) == 3 and {d["reason"] for d in replays} == {"unauthenticated_command"}


def test_a_command_without_a_key_in_the_environment_is_refused_naming_the_variable(tmp_path):
    env = live_env(f"127.0.0.1:{free_port()}", tmp_path / "recovery")
    proc = orderguard(env, "hold", "release", "C1", "--operator", "bob", timeout=60)
    assert proc.returncode == 1
    assert "ORDERGUARD__CONTROL__KEYS__<NAME>" in proc.stderr and "nothing sent" in proc.stderr


def _now() -> str:
    from datetime import UTC, datetime

    at = datetime.now(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def test_a_command_to_a_broker_that_does_not_answer_fails_in_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = live_env(address, tmp_path / "recovery")
    env["ORDERGUARD__CONTROL__KEYS__OPS"] = OPS_KEY
    proc = orderguard(env, "hold", "release", "C1", "--operator", "bob", timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert address in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_a_command_before_any_run_creates_the_control_topic_as_run_would(broker, tmp_path):
    """One source of truth for the control topic's size: `run` and the commands agree."""
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    env["ORDERGUARD__CONTROL__KEYS__OPS"] = OPS_KEY
    control = env["ORDERGUARD__KAFKA__CONTROL_TOPIC"]
    wanted = settings_of(env).kafka.topic_partitions()[control]
    first = orderguard(env, "hold", "release", "C1", "--operator", "bob")
    # C1 is on no hold: the pipeline emits nothing for it, and the command does not promise it
    assert "releasing a customer not on hold emits nothing" in ok(first), first.stdout
    meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert len(meta.topics[control].partitions) == wanted
    # the run creates the rest and finds the control topic as it wants it; so does a command
    ok(orderguard(env, "run", "--exit-when-caught-up"))
    again = orderguard(env, "breaker", "force", "carrier", "jt", "OPEN", "--operator", "bob")
    ok(again)
    for proc in (first, again):
        assert "partitions, wanted" not in proc.stderr + proc.stdout, proc.stderr
