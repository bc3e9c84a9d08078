"""The Functions app: one FunctionApp, one Blueprint per area. Nothing else lives here."""

import azure.functions as func

from blueprints.health import bp as health

app = func.FunctionApp()
app.register_blueprint(health)
