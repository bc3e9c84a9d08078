"""The Functions app: one FunctionApp, one Blueprint per area. Nothing else lives here."""

import azure.functions as func

from blueprints.callbacks import bp as callbacks
from blueprints.campaigns import bp as campaigns
from blueprints.control import bp as control
from blueprints.health import bp as health
from blueprints.incoming_calls import bp as incoming_calls
from blueprints.recordings import bp as recordings
from blueprints.records import bp as records

app = func.FunctionApp()
app.register_blueprint(incoming_calls)
app.register_blueprint(callbacks)
app.register_blueprint(recordings)
app.register_blueprint(records)
app.register_blueprint(control)
app.register_blueprint(campaigns)
app.register_blueprint(health)
