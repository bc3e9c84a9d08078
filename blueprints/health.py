"""GET /api/health: the app is loaded and answering."""

import json

import azure.functions as func

from handlers.health import health_report

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    report = health_report()
    return func.HttpResponse(json.dumps(report), status_code=200, mimetype="application/json")
