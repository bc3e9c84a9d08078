// The Communication Services resource (with a system-assigned identity, which ACS uses to
// reach Azure AI services for text-to-speech and speech recognition) and the Event Grid
// system topic on it. The topic's event subscriptions need the function code to exist and are
// created after `azd deploy` by infra/eventgrid.bicep (the postdeploy hook).

@description('Communication Services resource name (globally unique).')
param name string

@description('Where ACS stores data at rest, e.g. United States, Europe, UK, Australia.')
param dataLocation string

@description('Name of the Event Grid system topic on the ACS resource.')
param systemTopicName string

@description('Tags for the resources.')
param tags object

@description('true (the default): only Microsoft Entra ID can call ACS, its access keys are refused. The app authenticates with its managed identity; false only for tools that need a connection string.')
param disableLocalAuth bool = true

resource acs 'Microsoft.Communication/communicationServices@2025-05-01' = {
  name: name
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    dataLocation: dataLocation
    disableLocalAuth: disableLocalAuth
  }
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: acs.id
    topicType: 'Microsoft.Communication.CommunicationServices'
  }
}

output name string = acs.name
output id string = acs.id
output endpoint string = 'https://${acs.properties.hostName}'
output principalId string = acs.identity.principalId
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
