"""`orderguard breaker force` and `orderguard hold release` against a real broker and pipeline.

Simulated traffic with a carrier API outage (opens carrier jt) and deliveries the OMS
never reflects (customer holds) is processed by `orderguard run`; the operator
commands are then given as subprocesses, the way an on-call engineer would, and the
resumed run applies them: the breakers topic carries the operator decisions.
"""

from __future__ import annotations

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from connectors.broker import free_port
from tests.helpers import settings_of
from tests.integration.test_run_live import live_env, ok, orderguard, read_topic

ORDERS = 400
INCIDENTS = ("--incident", "carrier_api_outage", "--incident", "delivery_not_reflected")


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

    ok(orderguard(env, "run", "--exit-when-caught-up"))
    after = records(broker.bootstrap, breakers)
    by_operator = {d["key"]: d for d in after if "operator" in d["figures"]}
    assert {k: (d["breaker"], d["state"], d["reason"]) for k, d in by_operator.items()} == {
        "jt": ("carrier", "CLOSED", "operator alice: forced CLOSED"),
        customer: ("customer", "RELEASED", "operator bob: refunded"),
        "pinduoduo": ("channel", "OPEN", "operator carol: forced OPEN"),
    }
    jt = by_operator["jt"]
    assert (jt["figures"]["forced"], jt["action"]) == (True, "resume")
    assert jt["figures"]["command_id"] in forced  # the CLI printed the id it sent
    release = by_operator[customer]
    assert (release["previous_state"], release["figures"]["forced"]) == ("HOLD", False)

    bad = [d for d in records(broker.bootstrap, dead_letters) if d["stream"] == "control"]
    assert sorted(d["reason"] for d in bad) == ["invalid_breaker_state", "not_json"]
    assert all(d["origin"]["topic"] == control for d in bad)

    # at least once: the same commands delivered again change nothing and say nothing
    sent = [v for _, v in read_topic(broker.bootstrap, control)]
    produce_raw(broker.bootstrap, control, *sent)
    ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert len(records(broker.bootstrap, breakers)) == len(after)


def test_a_command_to_a_broker_that_does_not_answer_fails_in_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = live_env(address, tmp_path / "recovery")
    proc = orderguard(env, "hold", "release", "C1", "--operator", "bob", timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert address in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_a_command_before_any_run_creates_the_control_topic_as_run_would(broker, tmp_path):
    """One source of truth for the control topic's size: `run` and the commands agree."""
    env = live_env(broker.bootstrap, tmp_path / "recovery")
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
