"""Event Grid: the system topic's subscriptions (infra/eventgrid.bicep) each go to the function
that takes those events, with a retry policy and dead-lettering; IncomingCall can be limited to
some numbers; the call-record subscription waits behind deployCallRecordsSubscription."""

from __future__ import annotations

from tests.infra import bicep

EG = bicep.template("eventgrid.bicep")
CTX = bicep.Context(EG)
MAIN_CTX = bicep.Context(bicep.template("main.bicep"))
SUBSCRIPTIONS = EG.resources_of_type("Microsoft.EventGrid/systemTopics/eventSubscriptions")

EXPECTED = {
    "incoming_call": ["Microsoft.Communication.IncomingCall"],
    "recording_file_status": ["Microsoft.Communication.RecordingFileStatusUpdated"],
    "call_records": [
        "Microsoft.Communication.CallStarted",
        "Microsoft.Communication.CallEnded",
        "Microsoft.Communication.CallParticipantAdded",
        "Microsoft.Communication.CallParticipantRemoved",
    ],
}


def target_function(subscription: bicep.Decl) -> str:
    destination = subscription.body["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    resource_id = destination["properties"]["resourceId"]
    # '${functionApp.id}/functions/<name>'
    assert isinstance(resource_id, bicep.Interp) and len(resource_id.parts) == 2, bicep.src(resource_id)
    site, suffix = resource_id.parts
    _, decl, props = bicep.resource_of(CTX, site)
    assert decl.resource_type == "Microsoft.Web/sites" and decl.existing and props == ("id",)
    assert suffix.startswith("/functions/")
    return suffix.removeprefix("/functions/")


BY_FUNCTION = {target_function(s): s for s in SUBSCRIPTIONS.values()}


def test_the_template_runs_after_deploy_not_inside_main():
    assert EG.target_scope == "resourceGroup"
    topic = only_topic()
    assert topic.existing, "the topic itself is made by main.bicep (modules/communication.bicep)"


def only_topic() -> bicep.Decl:
    [topic] = EG.resources_of_type("Microsoft.EventGrid/systemTopics").values()
    return topic


def test_one_subscription_per_function_with_its_event_types():
    assert set(BY_FUNCTION) == set(EXPECTED)
    for function, subscription in BY_FUNCTION.items():
        assert subscription.body["parent"] == bicep.Ref(only_topic().name)
        types = subscription.body["properties"]["filter"]["includedEventTypes"]
        assert types == EXPECTED[function], function


def test_subscribed_functions_are_event_grid_triggers_of_the_app():
    functions = bicep.app_functions()
    for name in ("incoming_call", "recording_file_status"):
        assert name in functions, f"the app has no function {name}"
        assert functions[name].get_trigger().type == "eventGridTrigger", name
    if "call_records" in functions:
        assert functions["call_records"].get_trigger().type == "eventGridTrigger"


def test_call_records_subscription_is_behind_a_parameter_on_by_default_now_the_function_exists():
    subscription = BY_FUNCTION["call_records"]
    assert subscription.condition == bicep.Ref("deployCallRecordsSubscription")
    param = EG.params["deployCallRecordsSubscription"]
    assert param.type == "bool" and param.value is ("call_records" in bicep.app_functions())
    assert BY_FUNCTION["incoming_call"].condition is None
    assert BY_FUNCTION["recording_file_status"].condition is None
    functions = set(bicep.app_functions())
    if "call_records" not in functions:
        # Event Grid refuses a subscription to a missing function: the default must stay false.
        assert bicep.evaluate(CTX, bicep.Ref("deployCallRecordsSubscription")) is False


def test_every_subscription_retries_and_dead_letters_to_the_dead_letter_container():
    for function, subscription in BY_FUNCTION.items():
        properties = subscription.body["properties"]
        retry = bicep.evaluate(CTX, properties["retryPolicy"])
        assert retry["maxDeliveryAttempts"] >= 1 and retry["eventTimeToLiveInMinutes"] >= 1, function
        dead_letter = properties["deadLetterWithResourceIdentity"]
        ctx, dead_letter = bicep.trace(CTX, dead_letter)
        assert dead_letter["identity"] == {"type": "SystemAssigned"}
        destination = dead_letter["deadLetterDestination"]
        assert destination["endpointType"] == "StorageBlob"
        _, account, props = bicep.resource_of(ctx, destination["properties"]["resourceId"])
        assert account.resource_type == "Microsoft.Storage/storageAccounts" and props == ("id",)
        container = bicep.evaluate(ctx, destination["properties"]["blobContainerName"])
        assert container == bicep.evaluate(MAIN_CTX, bicep.Ref("deadLetterContainerName"))
        assert properties["eventDeliverySchema"] == "EventGridSchema"
        assert properties["destination"]["properties"]["maxEventsPerBatch"] == 1


def test_incoming_call_is_not_retried_past_the_ringing():
    retry = bicep.evaluate(CTX, BY_FUNCTION["incoming_call"].body["properties"]["retryPolicy"])
    assert retry["eventTimeToLiveInMinutes"] <= 5
    recording = bicep.evaluate(CTX, BY_FUNCTION["recording_file_status"].body["properties"]["retryPolicy"])
    assert recording["eventTimeToLiveInMinutes"] >= 60, "a recording stays downloadable for a long time"


def test_incoming_call_can_be_filtered_by_called_number():
    filters = BY_FUNCTION["incoming_call"].body["properties"]["filter"]["advancedFilters"]
    ctx, filters = bicep.trace(CTX, filters)
    assert isinstance(filters, bicep.Cond)
    assert filters.test == bicep.Call("empty", (bicep.Ref("incomingCallNumbers"),), "")
    assert filters.yes == []
    [advanced] = filters.no
    assert advanced == {
        "operatorType": "StringIn",
        "key": "data.to.PhoneNumber.Value",
        "values": bicep.Ref("incomingCallNumbers"),
    }
    param = EG.params["incomingCallNumbers"]
    assert param.type == "array" and param.value == []
    assert param.decorators["maxLength"] == (25,), "StringIn takes at most 25 values"
    # No filter by default: every incoming call.
    assert bicep.evaluate(ctx, BY_FUNCTION["incoming_call"].body["properties"]["filter"]["advancedFilters"]) == []


def test_other_subscriptions_are_not_filtered_by_number():
    for function in ("recording_file_status", "call_records"):
        assert "advancedFilters" not in BY_FUNCTION[function].body["properties"]["filter"]


def test_parameters_without_default_are_outputs_of_main():
    """The postdeploy hook passes them from azd's environment, i.e. from main.bicep's outputs."""
    required = {n for n, d in EG.params.items() if not d.has_default}
    assert required == {"systemTopicName", "functionAppName", "storageAccountName"}
