"""GET /api/health: settings and dependencies; 503 when something is wrong."""

import json

import azure.functions as func

from handlers.health import health_report

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    report = health_report()
    status = 200 if report["status"] == "ok" else 503
    return func.HttpResponse(json.dumps(report), status_code=status, mimetype="application/json")
