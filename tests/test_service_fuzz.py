"""Schemathesis (v4) against the service's own OpenAPI schema, authenticated as an admin and
as a customer (whose answers are mostly 403/404 problems, and its own account's data): a
bounded number of generated requests per operation; no 500s, and every response conforms to
the schema (status code, content type, body).

``POST /api/runs`` and the counterfactual rerun are left out: they start simulations (covered
by tests/test_service_runs.py); everything else is fuzzed, writes included. The app is built
when this module is collected (schemathesis needs the schema to parametrize; its
fixture-based loader does not work with this pytest), on a SQLite store in a temporary
directory removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _build():
    from argon2 import PasswordHasher

    from conftest import seed_service_store
    from leotwin.config import Settings
    from leotwin.service import create_app
    from leotwin.store import Store, repository

    root = Path(tempfile.mkdtemp(prefix="leotwin-fuzz-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'db'}",
                        max_upload_bytes=64 * 1024)
    with pytest.MonkeyPatch.context() as mp, Store.open(settings.database_url) as store:
        mp.setattr(repository, "_HASHER",
                   PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        seed_service_store(store)
        _, token = store.create_api_token("root", "fuzz")
        _, customer = store.create_api_token("cathy", "fuzz")  # a customer of account acme
    app = create_app(settings)
    atexit.register(app.state.leotwin.store.close)
    return app, {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {customer}"}


# Bounded: the deterministic coverage phase (boundary and invalid values per parameter) is off
# to keep the suite fast; the examples and fuzzing phases run max_examples cases per operation.
CONFIG = SchemathesisConfig.from_str(os.environ.get("LEOTWIN_FUZZ_CONFIG", """
[phases.coverage]
enabled = false
"""))
APP, ADMIN, CUSTOMER = _build()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG).exclude(
    method="POST", path_regex=r"^/api/runs(/\{run_id\}/counterfactual)?$")


@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(headers=ADMIN, checks=CHECKS)


# The same as a customer: tenant confinement answers (403 for staff routes and other
# accounts, 404 for others' ids) and the customer's own data must be schema-conform too.
@schema.parametrize()
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema_as_a_customer(case):
    case.call_and_validate(headers=CUSTOMER, checks=CHECKS)


# Generated run ids almost never name a run, so the run routes above mostly answer 404. Here a
# real (short) flagship run is registered and every GET route of a run is called on it, as the
# admin and as a customer, and checked against the schema like the generated cases.
RUN_ROUTES = ["/api/runs/{run_id}", "/api/runs/{run_id}/terminals", "/api/runs/{run_id}/frames",
              "/api/runs/{run_id}/availability", "/api/runs/{run_id}/summary",
              "/api/runs/{run_id}/outages", "/api/runs/{run_id}/timeline"]


@pytest.fixture(scope="module")
def registered_run():
    from leotwin.flagship import run_flagship

    settings = APP.state.leotwin.settings
    out = settings.runs_dir / "fuzz-flagship"
    run_flagship(out, window=("2022-10-05T10:00:00Z", "2022-10-05T10:02:00Z"), report=False)
    r = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)["/api/runs"][
        "POST"].Case(body={"run_dir": str(out)}, media_type="application/json").call(
        headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("path", RUN_ROUTES)
def test_run_routes_conform_to_their_schema_on_a_real_run(registered_run, path):
    operation = schema[path]["GET"]
    case = operation.Case(path_parameters={"run_id": registered_run})
    response = case.call_and_validate(headers=ADMIN, checks=CHECKS)
    assert response.status_code == 200, response.text
    # an operator's run (no account) is shown to a customer confined to its own terminals
    own = case.call_and_validate(headers=CUSTOMER, checks=CHECKS)
    assert own.status_code == 200, own.text
    terminal = schema["/api/runs/{run_id}/terminals"]["GET"].Case(
        path_parameters={"run_id": registered_run}).call(headers=ADMIN).json()
    tid = terminal["features"][0]["properties"]["terminal"]
    schema["/api/runs/{run_id}/terminals/{terminal}/timeline"]["GET"].Case(
        path_parameters={"run_id": registered_run, "terminal": tid}).call_and_validate(
        headers=ADMIN, checks=CHECKS)
