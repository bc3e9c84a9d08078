"""Blueprints: the only code that imports ``azure.functions``. Each parses its trigger's input,
calls a plain handler, and turns the result into a response.

Loading them under a Functions host first validates the app's settings and flows, so a bad
setting or an invalid flow stops start-up instead of reaching a caller (see core/platform/startup.py).
"""

from core.platform.startup import check_on_host_start

check_on_host_start()
