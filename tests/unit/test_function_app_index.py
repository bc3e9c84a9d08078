"""The azure-functions library indexes function_app.py the way the Functions host does."""

import function_app


def test_health_function_is_indexed_as_anonymous_http_get():
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    assert "health" in functions
    trigger = functions["health"].get_trigger()
    assert trigger.type == "httpTrigger"
    assert trigger.route == "health"
    assert [str(m) for m in trigger.methods] in (["GET"], ["HttpMethod.GET"])
    assert str(trigger.auth_level).lower().endswith("anonymous")
