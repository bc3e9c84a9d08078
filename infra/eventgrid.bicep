// Event Grid subscriptions on the ACS system topic, each to its function. Deployed after the
// code (azd postdeploy hook, infra/hooks/postdeploy.sh): an AzureFunction endpoint is validated
// against the deployed function, so this cannot run before `azd deploy`.
//
//   IncomingCall               -> incoming_call          (optionally only for some numbers)
//   RecordingFileStatusUpdated -> recording_file_status
//   CallStarted, CallEnded,
//   CallParticipantAdded,
//   CallParticipantRemoved     -> call_records           (deployCallRecordsSubscription, on by
//                                                          default; false for an app without it)
//
// Every subscription retries and dead-letters to the app-data storage account's dead-letter container,
// written with the system topic's managed identity (roles.bicep grants it).
targetScope = 'resourceGroup'

@description('Name of the Event Grid system topic on the ACS resource (main.bicep output EVENTGRID_SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('Name of the Function App (main.bicep output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('App-data storage account holding the dead-letter container (main.bicep output AZURE_STORAGE_ACCOUNT_NAME).')
param storageAccountName string

@description('Dead-letter container (main.bicep output EVENTGRID_DEADLETTER_CONTAINER).')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Deliver IncomingCall only for calls to these numbers (E.164, e.g. +14255550100); empty: every incoming call.')
@maxLength(25)
param incomingCallNumbers array = []

@description('Subscribe the call_records function to CallStarted, CallEnded, CallParticipantAdded and CallParticipantRemoved. Set false only for a deployed app without a call_records function: Event Grid rejects a subscription to a function that does not exist.')
param deployCallRecordsSubscription bool = true

@description('IncomingCall delivery attempts. A call rings for a short time, so late retries are useless.')
@minValue(1)
@maxValue(30)
param incomingCallMaxDeliveryAttempts int = 5

@description('Minutes an IncomingCall event is retried before it is dead-lettered.')
@minValue(1)
@maxValue(1440)
param incomingCallEventTtlMinutes int = 1

@description('Delivery attempts for recording and call-record events.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes recording and call-record events are retried before they are dead-lettered.')
@minValue(1)
@maxValue(1440)
param eventTtlMinutes int = 1440

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

var deadLetter = {
  identity: {
    type: 'SystemAssigned'
  }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: storage.id
      blobContainerName: deadLetterContainerName
    }
  }
}

var incomingCallFilters = empty(incomingCallNumbers) ? [] : [
  {
    operatorType: 'StringIn'
    key: 'data.to.PhoneNumber.Value'
    values: incomingCallNumbers
  }
]

resource incomingCall 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'incoming-call'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/incoming_call'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Communication.IncomingCall'
      ]
      advancedFilters: incomingCallFilters
    }
    retryPolicy: {
      maxDeliveryAttempts: incomingCallMaxDeliveryAttempts
      eventTimeToLiveInMinutes: incomingCallEventTtlMinutes
    }
    deadLetterWithResourceIdentity: deadLetter
  }
}

resource recordingFileStatus 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'recording-file-status'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/recording_file_status'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Communication.RecordingFileStatusUpdated'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTtlMinutes
    }
    deadLetterWithResourceIdentity: deadLetter
  }
}

resource callRecords 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (deployCallRecordsSubscription) {
  parent: systemTopic
  name: 'call-records'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/call_records'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Communication.CallStarted'
        'Microsoft.Communication.CallEnded'
        'Microsoft.Communication.CallParticipantAdded'
        'Microsoft.Communication.CallParticipantRemoved'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTtlMinutes
    }
    deadLetterWithResourceIdentity: deadLetter
  }
}

output incomingCallSubscription string = incomingCall.name
output recordingFileStatusSubscription string = recordingFileStatus.name
output callRecordsSubscription string = deployCallRecordsSubscription ? 'call-records' : ''
