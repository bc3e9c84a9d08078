// Every role assignment of the deployment, each at the narrowest scope that works:
//   the host identity    -> host storage (deployment package, AzureWebJobsStorage), the callback
//                           secrets (Key Vault references), optional Entra telemetry
//   the app identity     -> the QA container and the four tables of the app-data account (never the
//                           account), ACS (Call Automation)
//   the ACS identity     -> Azure AI services; with bring your own storage, the app-data account
//                           (the scope Microsoft's guide names; it holds no package)
//   the Event Grid topic -> the dead-letter container
// The app's code runs with the app identity (AZURE_CLIENT_ID): it has no role on the host storage
// account, so no blob name, URL or event it handles can reach the deployment package.
// Built-in role definition ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles

@description('Principal id of the app identity (AZURE_CLIENT_ID: the identity the app\'s code uses).')
param appPrincipalId string

@description('Principal id of the host identity (AzureWebJobsStorage, deployment package, Key Vault references).')
param hostPrincipalId string

@description('Principal id of the ACS resource\'s system-assigned identity.')
param acsPrincipalId string

@description('Principal id of the Event Grid system topic\'s system-assigned identity.')
param systemTopicPrincipalId string

param hostStorageAccountName string
param storageAccountName string
param deadLetterContainerName string
param recordingsContainerName string
param stateTableName string
param eventsTableName string
param recordsTableName string
param outboundTableName string

@description('copy or byos (bring your own storage: ACS writes recordings into the QA container).')
@allowed([
  'copy'
  'byos'
])
param recordingStorage string = 'copy'
param keyVaultName string
param callbackSecretName string
param callbackSecretPreviousName string

@description('A callback key rotation is in progress: the host identity may read the previous key too.')
param callbackSecretRotation bool = false
param acsName string
param aiServicesName string
param appInsightsName string

@description('Grant Monitoring Metrics Publisher for Entra-authenticated telemetry (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).')
param appInsightsEntraAuth bool = false

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  contributor: 'b24988ac-6180-42a0-ab88-20f7382dd24c'
  cognitiveServicesUser: 'a97b65f3-24c7-4388-baec-2e87135dc908'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// ---- host storage ----

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

// ---- app-data storage ----

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource recordingsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: recordingsContainerName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: stateTableName
}

resource eventsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: eventsTableName
}

resource recordsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: recordsTableName
}

resource outboundTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: outboundTableName
}

// ---- the rest ----

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource callbackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: callbackSecretName
}

resource callbackSecretPrevious 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: callbackSecretPreviousName
}

resource acs 'Microsoft.Communication/communicationServices@2025-05-01' existing = {
  name: acsName
}

resource aiServices 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: aiServicesName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// The Functions host: AzureWebJobsStorage (identity-based: its keys and timer/singleton leases in
// containers it creates) and the Flex Consumption deployment container. Blob Data Owner on the
// host account is what Flex Consumption documents for identity-based host storage; no queue or
// table role, as the app has no queue, Durable or table-based triggers.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, hostPrincipalId, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: QA copies of recordings (APP_STORAGE__blobServiceUri, RECORDINGS_CONTAINER), this
// container only. Owner rather than Contributor because the app sets blob index tags on each copy
// (Set Blob Tags, x-ms-tags on upload: blobs/tags/write, which Contributor lacks).
resource appRecordingsOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(recordingsContainer.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: recordingsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: its four tables (APP_STORAGE__tableServiceUri), each one alone.
resource appStateTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateTable.id, appPrincipalId, roles.storageTableDataContributor)
  scope: stateTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEventsTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventsTable.id, appPrincipalId, roles.storageTableDataContributor)
  scope: eventsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appRecordsTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(recordsTable.id, appPrincipalId, roles.storageTableDataContributor)
  scope: recordsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appOutboundTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outboundTable.id, appPrincipalId, roles.storageTableDataContributor)
  scope: outboundTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The host: the CALLBACK_SECRET Key Vault reference (resolved by the platform with
// keyVaultReferenceIdentity), scoped to that one secret.
resource hostSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(callbackSecret.id, hostPrincipalId, roles.keyVaultSecretsUser)
  scope: callbackSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// During a rotation: the CALLBACK_SECRET_PREVIOUS reference, scoped to that one secret.
resource hostPreviousSecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (callbackSecretRotation) {
  name: guid(callbackSecretPrevious.id, hostPrincipalId, roles.keyVaultSecretsUser)
  scope: callbackSecretPrevious
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: Call Automation with Microsoft Entra ID (ACS_ENDPOINT, no access key). ACS has no
// narrower built-in data-plane role for Call Automation; Contributor is scoped to this resource.
// Its keys (listKeys) are useless while ACS local auth is disabled (the default).
resource appAcsContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acs.id, appPrincipalId, roles.contributor)
  scope: acs
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.contributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ACS itself: text-to-speech and speech recognition through Azure AI services.
resource acsCognitiveServicesUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(aiServices.id, acsPrincipalId, roles.cognitiveServicesUser)
  scope: aiServices
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser)
    principalId: acsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Bring your own storage (RECORDING_STORAGE=byos): ACS writes recordings into the QA container with its
// identity. Scoped to the app-data storage account, as Microsoft's guide does ("Call recording: Bring
// your own Azure storage", learn.microsoft.com/azure/communication-services/quickstarts/call-automation/
// call-recording/bring-your-own-storage: scope Storage, resource: your storage account): a container
// scope is untested with ACS. The account holds the app's data only (no package: hoststorage.bicep).
resource acsRecordingWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (recordingStorage == 'byos') {
  name: guid(storage.id, acsPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: acsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Event Grid: dead-lettering with the system topic's identity (the account has no shared keys).
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Optional: the Functions host sends telemetry with Microsoft Entra ID.
resource hostMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (appInsightsEntraAuth) {
  name: guid(appInsights.id, hostPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}
