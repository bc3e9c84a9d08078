"""GET /api/health: anonymous liveness, which says nothing; GET /api/health/details: settings, versions and
dependencies (probes cached), behind the function key; 503 when something is wrong."""

import json

import azure.functions as func

from handlers.health import health_report, liveness

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(liveness()), status_code=200, mimetype="application/json")


@bp.function_name("health_details")
@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    report = health_report()
    status = 200 if report["status"] == "ok" else 503
    return func.HttpResponse(json.dumps(report), status_code=status, mimetype="application/json")
