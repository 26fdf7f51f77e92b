"""A bounded schemathesis run over the server's OpenAPI schema: no generated request may cause a 5xx.

Requests go over real HTTP to uvicorn serving the random tiny checkpoint with a 64-position context, so even
the largest `max_tokens` the fuzzer picks costs a fraction of a second. The budget (`MAX_EXAMPLES` per
operation, no shrinking, no example database) keeps the run under a minute on a loaded 2-core machine; raise it
locally to search harder.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from mgrd.serve.app import create_app, load_server

from .helpers import Live

MAX_EXAMPLES = int(os.environ.get("MGRD_FUZZ_EXAMPLES", 40))  # per operation; raise it to search harder
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzz_live(tiny_dir):
    server = load_server(tiny_dir, served_model_name="tiny", max_model_len=64, default_max_tokens=4,
                         max_num_seqs=4, max_n=2, max_body_mb=1.0, max_audio_seconds=2.0, max_audio_parts=2)
    live = Live(create_app(server))
    yield live
    live.stop()
    server.scheduler.stop()


def test_no_request_makes_a_server_error(fuzz_live):
    """Every operation of /openapi.json, MAX_EXAMPLES generated requests each (schemathesis' own pytest plugin is
    driven by hand here: its fixture loader does not run under this pytest)."""
    schema = schemathesis.openapi.from_url(fuzz_live.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
                  suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(base_url=fuzz_live.url, checks=[not_a_server_error], timeout=60)

        call()
    assert httpx_get(fuzz_live.url + "/health")["status"] == "ok"
    assert fuzz_live.server.scheduler.load["waiting_jobs"] == 0
    assert fuzz_live.server.scheduler.forwards > 0  # some generated requests were valid and reached the model


def httpx_get(url: str) -> dict:
    import httpx2

    return httpx2.get(url, timeout=30).json()
