"""FakeSpanServer, driven through the real scale-gp-beta SDK and raw httpx over loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import scale_gp_beta
from scale_gp_beta import AsyncSGPClient, SGPClient
from scale_gp_beta.types import SpanCreateParam

from shipper import testing
from shipper.testing import BATCH_PATH, FakeSpanServer, RequestRecord, SpanKind

KEY = "test-key"
ACCOUNT = "acct-1"
START = "2024-05-01T12:00:00Z"
END = "2024-05-01T12:00:01.500000+00:00"


def span(
    span_id: str | None = "s1", trace_id: str = "t1", *, end: bool = False, **extra: Any
) -> SpanCreateParam:
    item: dict[str, Any] = {"name": f"op-{span_id}", "trace_id": trace_id, "start_timestamp": START}
    if span_id is not None:
        item["id"] = span_id
    if end:
        item["end_timestamp"] = END
    return cast(SpanCreateParam, item | extra)


@pytest.fixture
def server() -> Iterator[FakeSpanServer]:
    with FakeSpanServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def client(server: FakeSpanServer) -> Iterator[SGPClient]:
    with SGPClient(base_url=server.base_url, api_key=KEY, account_id=ACCOUNT, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(server: FakeSpanServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": KEY}) as raw:
        yield raw


def put(http: httpx.Client, payload: object) -> httpx.Response:
    return http.put(BATCH_PATH, content=json.dumps(payload).encode())


def detail(exc: scale_gp_beta.APIStatusError) -> str:
    body = exc.body
    assert isinstance(body, dict)
    return str(body["detail"])


# -- the SDK round trip ------------------------------------------------------------------------


def test_sdk_upsert_batch_stores_spans_and_parses_the_answer(
    server: FakeSpanServer, client: SGPClient
) -> None:
    result = client.spans.upsert_batch(items=[span("a"), span("b", end=True), span(None)])

    assert [item.trace_id for item in result.items] == ["t1", "t1", "t1"]
    assert [item.id for item in result.items][:2] == ["a", "b"]
    generated = result.items[2].id
    assert len(generated) == 36  # a uuid assigned to the item sent without id
    assert set(server.spans()) == {("t1", "a"), ("t1", "b"), ("t1", generated)}
    assert server.completed_ids() == {"b"}
    assert [(r.index, r.status, r.item_count) for r in server.requests()] == [(0, 200, 3)]


def test_async_client_and_a_pre_serialized_body(server: FakeSpanServer) -> None:
    body = json.dumps({"items": [span("raw", end=True)]}).encode()

    async def ship() -> httpx.Response:
        async with AsyncSGPClient(
            base_url=server.base_url, api_key=KEY, account_id=ACCOUNT, max_retries=0
        ) as sdk:
            await sdk.spans.upsert_batch(items=[span("typed")])
            return await sdk.put(BATCH_PATH, content=body, cast_to=httpx.Response)

    response = asyncio.run(ship())

    assert response.status_code == 200
    assert response.json()["items"] == [{"id": "raw", "trace_id": "t1"}]
    assert server.spans()[("t1", "raw")]["end_timestamp"] == END
    assert ("t1", "typed") in server.spans()


def test_base_url_from_the_sdk_environment_variable(
    server: FakeSpanServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SGP_CLIENT_BASE_URL", server.base_url)
    with SGPClient(api_key=KEY, account_id=ACCOUNT, max_retries=0) as sdk:
        sdk.spans.upsert_batch(items=[span("env")])
    assert ("t1", "env") in server.spans()


def test_keep_alive_reuses_one_connection(server: FakeSpanServer, client: SGPClient) -> None:
    for n in range(20):
        client.spans.upsert_batch(items=[span(f"k{n}")])
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": KEY}) as raw:
        for n in range(20):
            assert put(raw, {"items": [span(f"r{n}")]}).status_code == 200

    stats = server.stats()
    assert stats.requests == 40
    assert stats.connections == 2


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "JSON object"),
        (b"", "JSON object"),
        (b'{"spans": []}', "'items' list"),
        (b'{"items": {}}', "'items' list"),
        (b'{"items": [1]}', "items[0]: must be an object"),
    ],
)
def test_malformed_bodies_are_422(http: httpx.Client, body: bytes, needle: str) -> None:
    response = http.put(BATCH_PATH, content=body)
    assert response.status_code == 422
    assert needle in response.json()["detail"]


@pytest.mark.parametrize("field", ["name", "trace_id", "start_timestamp"])
def test_missing_required_field_is_422(http: httpx.Client, field: str) -> None:
    item = dict(span("x"))
    del item[field]
    response = put(http, {"items": [span("ok"), item]})
    assert response.status_code == 422
    assert response.json()["detail"] == f"items[1] (id 'x'): field required: {field}"


def test_more_than_1000_items_is_422_and_1000_is_fine(
    server: FakeSpanServer, client: SGPClient
) -> None:
    with pytest.raises(scale_gp_beta.UnprocessableEntityError) as refused:
        client.spans.upsert_batch(items=[span(f"s{n}") for n in range(1001)])
    assert "1001 spans exceeds the limit of 1000" in detail(refused.value)

    client.spans.upsert_batch(items=[span(f"s{n}") for n in range(1000)])
    assert server.stats().spans == 1000


def test_end_before_start_is_422_naming_the_item(server: FakeSpanServer, client: SGPClient) -> None:
    early = span("late", end=True, end_timestamp="2024-05-01T11:59:59Z")
    with pytest.raises(scale_gp_beta.UnprocessableEntityError) as refused:
        client.spans.upsert_batch(items=[span("fine"), early])
    assert detail(refused.value) == "items[1] (id 'late'): end_timestamp precedes start_timestamp"
    assert server.spans() == {}  # the whole batch is refused


@pytest.mark.parametrize("field", ["id", "trace_id", "parent_id", "group_id"])
def test_identity_fields_over_256_characters_are_422(http: httpx.Client, field: str) -> None:
    assert put(http, {"items": [{**span("a"), field: "x" * 256}]}).status_code == 200
    response = put(http, {"items": [{**span("b"), field: "x" * 257}]})
    assert response.status_code == 422
    assert f"{field} is longer than 256 characters" in response.json()["detail"]


@pytest.mark.parametrize("field", ["id", "trace_id", "parent_id", "group_id"])
def test_identity_field_with_a_nul_byte_is_400_naming_it(client: SGPClient, field: str) -> None:
    with pytest.raises(scale_gp_beta.BadRequestError) as refused:
        client.spans.upsert_batch(items=[cast(SpanCreateParam, {**span("a"), field: "bad\x00id"})])
    assert detail(refused.value).endswith(f"{field} contains a NUL byte")


@pytest.mark.parametrize("field", ["id", "trace_id", "parent_id", "group_id"])
def test_identity_field_over_256_utf8_bytes_is_400_naming_it(
    http: httpx.Client, field: str
) -> None:
    assert put(http, {"items": [{**span("a"), field: "é" * 128}]}).status_code == 200  # 256 bytes
    response = put(http, {"items": [{**span("b"), field: "é" * 129}]})
    assert response.status_code == 400
    assert f"{field} is 258 bytes in UTF-8, more than 256" in response.json()["detail"]


def test_identity_field_with_invalid_utf8_is_400(http: httpx.Client) -> None:
    body = b'{"items": [{"name": "n", "trace_id": "t\\ud800", "start_timestamp": "2024-05-01"}]}'
    response = http.put(BATCH_PATH, content=body)
    assert response.status_code == 400
    assert response.json()["detail"] == "items[0]: trace_id is not valid UTF-8"


def test_a_422_anywhere_wins_over_an_earlier_400(http: httpx.Client) -> None:
    items = [span("nul\x00"), span("ok"), span("long", group_id="g" * 300)]
    response = put(http, {"items": items})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("items[2] (id 'long')")


@pytest.mark.parametrize(
    "bad", [{"parent_id": None}, {"name": 7}, {"start_timestamp": "yesterday"}]
)
def test_wrong_types_are_422(http: httpx.Client, bad: dict[str, Any]) -> None:
    assert put(http, {"items": [span("a", **bad)]}).status_code == 422


# -- storage and records -----------------------------------------------------------------------


def test_upsert_keeps_completed_over_in_progress_otherwise_the_later(
    server: FakeSpanServer, client: SGPClient
) -> None:
    client.spans.upsert_batch(items=[span("a", end=True, output={"v": 1})])
    client.spans.upsert_batch(items=[span("a", output={"v": 2})])  # in progress: ignored
    client.spans.upsert_batch(items=[span("b", output={"v": 1}), span("b", output={"v": 2})])
    client.spans.upsert_batch(items=[span("c", end=True, output={"v": 1})])
    client.spans.upsert_batch(items=[span("c", end=True, output={"v": 2})])
    client.spans.upsert_batch(items=[span("a", "other-trace")])

    spans = server.spans()
    assert spans[("t1", "a")]["output"] == {"v": 1}
    assert spans[("t1", "b")]["output"] == {"v": 2}
    assert spans[("t1", "c")]["output"] == {"v": 2}
    assert ("other-trace", "a") in spans
    assert server.completed_ids() == {"a", "c"}


def test_arrivals_duplicates_and_order_violations(
    server: FakeSpanServer, client: SGPClient
) -> None:
    client.spans.upsert_batch(items=[span("a"), span("b", end=True)])
    client.spans.upsert_batch(items=[span("a", end=True), span("b"), span("b", end=True)])
    client.spans.upsert_batch(items=[span("b", end=True)])

    arrivals = server.arrivals()
    assert [(a.span_id, a.kind) for a in arrivals] == [
        ("a", SpanKind.START),
        ("b", SpanKind.END),
        ("a", SpanKind.END),
        ("b", SpanKind.START),
        ("b", SpanKind.END),
        ("b", SpanKind.END),
    ]
    assert arrivals[1].item["end_timestamp"] == END
    assert server.duplicates() == 2  # b's end arrived three times
    assert server.order_violations() == [("t1", "b")]
    stats = server.stats()
    assert (stats.items_accepted, stats.spans, stats.completed) == (6, 2, 2)
    assert (stats.duplicates, stats.order_violations) == (2, 1)


def test_records_stay_consistent_under_concurrent_connections(server: FakeSpanServer) -> None:
    def send(worker: int) -> None:
        with httpx.Client(base_url=server.base_url, headers={"x-api-key": KEY}) as raw:
            for n in range(25):
                items = [span(f"w{worker}-{n}-{k}", f"t{worker}") for k in range(4)]
                assert put(raw, {"items": items}).status_code == 200

    workers = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    stats = server.stats()
    assert (stats.requests, stats.in_flight, stats.connections) == (200, 0, 8)
    assert (stats.items_accepted, stats.spans, stats.duplicates) == (800, 800, 0)
    assert sorted(r.index for r in server.requests()) == list(range(200))


def test_request_records_and_status_counts(server: FakeSpanServer, client: SGPClient) -> None:
    before = time.monotonic()
    server.faults.fail_next(1, status=503)
    with pytest.raises(scale_gp_beta.InternalServerError):
        client.spans.upsert_batch(items=[span("a"), span("b")])
    client.spans.upsert_batch(items=[span("a")])

    records = server.requests()
    assert [(r.index, r.status, r.item_count) for r in records] == [(0, 503, 2), (1, 200, 1)]
    assert before <= records[0].at <= records[1].at
    assert isinstance(records[0], RequestRecord)
    assert server.request_count == 2
    assert server.stats().by_status == {503: 1, 200: 1}


def test_record_false_keeps_counters_only() -> None:
    with FakeSpanServer(record=False) as quiet, httpx.Client(base_url=quiet.base_url) as raw:
        assert put(raw, {"items": [span("a"), span("a")]}).json()["items"][0]["id"] == "a"
        assert quiet.spans() == {}
        assert quiet.arrivals() == []
        assert quiet.stats().items_accepted == 2


# -- auth --------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401(server: FakeSpanServer) -> None:
    with (
        SGPClient(
            base_url=server.base_url, api_key="wrong", account_id=ACCOUNT, max_retries=0
        ) as sdk,
        pytest.raises(scale_gp_beta.AuthenticationError) as refused,
    ):
        sdk.spans.upsert_batch(items=[span()])
    assert detail(refused.value) == "Invalid API key"
    with httpx.Client(base_url=server.base_url) as raw:
        assert put(raw, {"items": [span()]}).status_code == 401
    assert server.spans() == {}


def test_auth_status_403_and_servers_without_a_key() -> None:
    with (
        FakeSpanServer(api_key=KEY, auth_status=403) as strict,
        SGPClient(
            base_url=strict.base_url, api_key="wrong", account_id=ACCOUNT, max_retries=0
        ) as sdk,
        pytest.raises(scale_gp_beta.PermissionDeniedError),
    ):
        sdk.spans.upsert_batch(items=[span()])
    with FakeSpanServer() as open_, httpx.Client(base_url=open_.base_url) as raw:
        assert put(raw, {"items": [span()]}).status_code == 200


def test_fail_auth_refuses_even_the_right_key_until_cleared(
    server: FakeSpanServer, client: SGPClient
) -> None:
    server.faults.fail_auth(403)
    with pytest.raises(scale_gp_beta.PermissionDeniedError):
        client.spans.upsert_batch(items=[span()])
    server.faults.fail_auth(None)
    client.spans.upsert_batch(items=[span()])
    assert server.stats().by_status == {403: 1, 200: 1}


# -- faults ------------------------------------------------------------------------------------


def test_fail_next_answers_n_requests_with_status_and_retry_after(
    server: FakeSpanServer, http: httpx.Client
) -> None:
    server.faults.fail_next(2, status=503, retry_after=0.25)
    server.faults.fail_next(1, status=429, retry_after=2, detail="slow down")

    answers = [put(http, {"items": [span()]}) for _ in range(4)]

    assert [r.status_code for r in answers] == [503, 503, 429, 200]
    assert [r.headers.get("retry-after") for r in answers] == ["0.25", "0.25", "2", None]
    assert answers[2].json() == {"detail": "slow down"}
    assert server.stats().items_accepted == 1


def test_fail_next_through_the_sdk(server: FakeSpanServer, client: SGPClient) -> None:
    server.faults.fail_next(1, status=503, retry_after=0.01)
    with pytest.raises(scale_gp_beta.InternalServerError) as failed:
        client.spans.upsert_batch(items=[span()])
    assert failed.value.response.headers["retry-after"] == "0.01"
    assert server.spans() == {}


def test_drop_next_closes_without_an_answer(server: FakeSpanServer, client: SGPClient) -> None:
    server.faults.drop_next(1)
    server.faults.drop_next(1, after_store=True)
    with pytest.raises(scale_gp_beta.APIConnectionError):
        client.spans.upsert_batch(items=[span("before")])
    with pytest.raises(scale_gp_beta.APIConnectionError):
        client.spans.upsert_batch(items=[span("after")])
    client.spans.upsert_batch(items=[span("after")])  # the retry a shipper would make

    assert set(server.spans()) == {("t1", "after")}
    assert server.duplicates() == 1
    assert [r.status for r in server.requests()] == [None, None, 200]
    assert server.stats().dropped == 2


def test_random_faults_follow_the_seed(http: httpx.Client, server: FakeSpanServer) -> None:
    def statuses(seed: int) -> list[int | None]:
        server.reset()
        server.faults.set_random(fail_rate=0.3, status=503, retry_after=0.05, seed=seed)
        return [put(http, {"items": [span()]}).status_code for _ in range(60)]

    first = statuses(7)
    assert statuses(7) == first
    assert statuses(8) != first
    assert 5 <= first.count(503) <= 35
    assert set(first) == {200, 503}


def test_random_drops(server: FakeSpanServer, client: SGPClient) -> None:
    server.faults.set_random(drop_rate=1.0)
    for _ in range(3):
        with pytest.raises(scale_gp_beta.APIConnectionError):
            client.spans.upsert_batch(items=[span()])
    assert server.stats().dropped == 3
    assert server.stats().connections == 3  # each drop costs the client its connection


def test_latency_fixed_and_ranged(server: FakeSpanServer, client: SGPClient) -> None:
    server.faults.set_latency(5.0)
    with pytest.raises(scale_gp_beta.APITimeoutError):
        client.spans.upsert_batch(items=[span()], timeout=0.05)

    server.faults.set_latency((0.05, 0.06))
    started = time.monotonic()
    client.spans.upsert_batch(items=[span()])
    assert time.monotonic() - started >= 0.05

    with pytest.raises(ValueError, match="latency"):
        server.faults.set_latency((0.2, 0.1))


def test_refuse_by_predicate_names_the_offending_ids(
    server: FakeSpanServer, client: SGPClient
) -> None:
    server.faults.refuse(lambda item: item.get("parent_id") == item.get("id"))
    cycle = [span("a", parent_id="a"), span("b"), span("c", parent_id="c")]
    with pytest.raises(scale_gp_beta.ConflictError) as refused:
        client.spans.upsert_batch(items=cycle)
    assert detail(refused.value).endswith(": a, c")
    client.spans.upsert_batch(items=[span("b")])
    assert set(server.spans()) == {("t1", "b")}


def test_refuse_by_ids_with_another_status() -> None:
    with FakeSpanServer() as fake, httpx.Client(base_url=fake.base_url) as raw:
        fake.faults.refuse({"x", "y"}, status=422, detail="parent in another trace")
        response = put(raw, {"items": [span("ok"), span("y")]})
        assert response.status_code == 422
        assert response.json() == {"detail": "parent in another trace: y"}
        assert put(raw, {"items": [span("ok")]}).status_code == 200


def test_max_body_bytes_is_413_and_keeps_the_connection(
    server: FakeSpanServer, http: httpx.Client
) -> None:
    server.faults.set_max_body_bytes(2_000)
    big = put(http, {"items": [span(f"s{n}") for n in range(40)]})
    small = put(http, {"items": [span("s")]})

    assert (big.status_code, small.status_code) == (413, 200)
    assert "exceeds the limit of 2000" in big.json()["detail"]
    assert server.stats().connections == 1


def test_hang_blocks_until_unhang(server: FakeSpanServer, client: SGPClient) -> None:
    server.faults.hang()
    answers: list[object] = []
    sender = threading.Thread(
        target=lambda: answers.append(client.spans.upsert_batch(items=[span()]))
    )
    sender.start()
    assert server.wait_for(lambda: server.stats().in_flight == 1)
    assert answers == []

    server.faults.unhang()
    sender.join(timeout=5)
    assert len(answers) == 1
    assert server.stats().by_status == {200: 1}


def test_stop_releases_hung_requests_promptly() -> None:
    errors: list[BaseException] = []
    fake = FakeSpanServer().start()
    with SGPClient(base_url=fake.base_url, api_key=KEY, account_id=ACCOUNT, max_retries=0) as sdk:

        def send() -> None:
            try:
                sdk.spans.upsert_batch(items=[span()])
            except scale_gp_beta.APIConnectionError as exc:
                errors.append(exc)

        fake.faults.hang()
        sender = threading.Thread(target=send)
        sender.start()
        assert fake.wait_for(lambda: fake.stats().in_flight == 1)
        started = time.monotonic()
        fake.stop()
        sender.join(timeout=5)
    assert time.monotonic() - started < 2.0
    assert len(errors) == 1
    assert fake.spans() == {}


def test_clear_and_reset(server: FakeSpanServer, http: httpx.Client) -> None:
    server.faults.fail_next(5)
    server.faults.set_latency(1.0)
    server.faults.clear()
    assert put(http, {"items": [span()]}).status_code == 200

    server.reset()
    assert (server.request_count, server.spans(), server.arrivals()) == (0, {}, [])


# -- the control API ---------------------------------------------------------------------------


def test_control_api_steers_faults(server: FakeSpanServer, client: SGPClient) -> None:
    with httpx.Client(base_url=server.base_url) as control:
        spec = {
            "fail_next": {"n": 1, "status": 503, "retry_after": 0.5},
            "refuse": {"ids": ["bad"], "status": 409},
            "max_body_bytes": 100_000,
            "fail_auth": None,
        }
        assert control.post("/_fake/faults", json=spec).json() == {"ok": True}
        with pytest.raises(scale_gp_beta.InternalServerError):
            client.spans.upsert_batch(items=[span("good")])
        with pytest.raises(scale_gp_beta.ConflictError):
            client.spans.upsert_batch(items=[span("good"), span("bad")])
        client.spans.upsert_batch(items=[span("good")])

        assert control.post("/_fake/faults", json={"fail_auth": 403}).status_code == 200
        with pytest.raises(scale_gp_beta.PermissionDeniedError):
            client.spans.upsert_batch(items=[span("good")])
        control.post("/_fake/faults", json={"clear": True, "latency": [0.0, 0.001]})
        client.spans.upsert_batch(items=[span("good", end=True)])

        stats = control.get("/_fake/stats").json()
        assert stats["by_status"] == {"503": 1, "409": 1, "200": 2, "403": 1}
        assert stats["requests"] == 5
        arrivals = control.get("/_fake/arrivals").json()
        assert [(a["span_id"], a["kind"]) for a in arrivals] == [("good", "start"), ("good", "end")]
        requests = control.get("/_fake/requests").json()
        assert [r["status"] for r in requests] == [503, 409, 200, 403, 200]
        assert control.get("/_fake/spans").json()[0]["end_timestamp"] == END

        assert control.post("/_fake/reset").status_code == 200
        assert control.get("/_fake/stats").json()["requests"] == 0


def test_control_api_hang_does_not_block_the_control_api(
    server: FakeSpanServer, client: SGPClient
) -> None:
    answers: list[object] = []
    with httpx.Client(base_url=server.base_url) as control:
        control.post("/_fake/faults", json={"hang": True})
        sender = threading.Thread(
            target=lambda: answers.append(client.spans.upsert_batch(items=[span()]))
        )
        sender.start()
        assert server.wait_for(lambda: server.request_count == 1)
        assert control.get("/_fake/stats").json()["in_flight"] == 1
        control.post("/_fake/faults", json={"hang": False})
        sender.join(timeout=5)
    assert len(answers) == 1


@pytest.mark.parametrize(
    "spec",
    [
        {"explode": True},
        {"fail_next": {"count": 1}},
        {"random": {"fail_rate": 2.0}},
        {"refuse": {"status": 409}},
        [1, 2],
    ],
)
def test_control_api_rejects_bad_specs(http: httpx.Client, spec: object) -> None:
    response = http.post("/_fake/faults", json=spec)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("bad fault spec")


def test_unknown_paths_and_methods(http: httpx.Client, server: FakeSpanServer) -> None:
    assert http.put("/v5/spans", content=b"{}").status_code == 404
    assert http.get(BATCH_PATH).status_code == 405
    assert http.post(BATCH_PATH, content=b"{}").status_code == 405
    assert http.get("/_fake/nothing").status_code == 404
    assert server.request_count == 0


# -- standalone ---------------------------------------------------------------------------------


def test_standalone_process_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "shipper.testing", "--port", "0", "--api-key", KEY]
    command += ["--fail-rate", "1.0", "--fail-status", "429", "--retry-after", "0.1"]
    command += ["--latency", "0,0.001"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        name, _, base_url = line.partition("=")
        assert name == "SGP_CLIENT_BASE_URL"
        assert base_url.startswith("http://127.0.0.1:")
        with (
            SGPClient(base_url=base_url, api_key=KEY, account_id=ACCOUNT, max_retries=0) as sdk,
            pytest.raises(scale_gp_beta.RateLimitError) as limited,
        ):
            sdk.spans.upsert_batch(items=[span()])
        assert limited.value.response.headers["retry-after"] == "0.1"
        with httpx.Client(base_url=base_url) as control:
            control.post("/_fake/faults", json={"clear": True})
        with SGPClient(base_url=base_url, api_key=KEY, account_id=ACCOUNT, max_retries=0) as sdk:
            sdk.spans.upsert_batch(items=[span("kept")])

        proc.send_signal(signal.SIGTERM)
        remaining, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert json.loads(remaining)["by_status"] == {"429": 1, "200": 1}


def test_exported_names() -> None:
    assert sorted(testing.__all__) == sorted(
        [
            "BATCH_PATH",
            "Arrival",
            "FakeSpanServer",
            "Faults",
            "RequestRecord",
            "ServerStats",
            "SpanKind",
            "main",
        ]
    )
    assert all(hasattr(testing, name) for name in testing.__all__)
