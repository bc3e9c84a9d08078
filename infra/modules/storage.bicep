// The app-data storage account: the app's tables (call state, processed events, call records,
// outbound campaigns), the QA copies of recordings, and Event Grid dead-letters. Nothing of the
// Functions host lives here: its deployment package and AzureWebJobsStorage are in the host
// account (hoststorage.bicep). The app identity's roles here are scoped to the QA container and
// to each table (roles.bicep): no role at account scope, none on the dead-letter container.
// Shared keys are disabled: every client authenticates with Microsoft Entra ID.

@description('Storage account name: 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Redundancy of the account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param redundancy string = 'Standard_GRS'

@description('Container for QA copies of call recordings (the RECORDINGS_CONTAINER setting).')
param recordingsContainerName string

@description('Container Event Grid writes undeliverable events to.')
param deadLetterContainerName string

@description('Table of per-call state (the STATE_TABLE setting).')
param stateTableName string

@description('Table of processed Event Grid event ids (the EVENTS_TABLE setting).')
param eventsTableName string

@description('Table of call records (the RECORDS_TABLE setting).')
param recordsTableName string

@description('Table of call campaigns and number-masking sessions (the OUTBOUND_TABLE setting).')
param outboundTableName string

@description('Days after which a recording copy moves to the Cool tier (0: never).')
@minValue(0)
param recordingsCoolAfterDays int = 30

@description('Days after which a recording copy moves to the Archive tier (0: never). Must exceed recordingsCoolAfterDays when both are set.')
@minValue(0)
param recordingsArchiveAfterDays int = 0

@description('Days after which a recording copy is deleted (0: never).')
@minValue(0)
param recordingsDeleteAfterDays int = 365

@description('Days after which a dead-lettered event is deleted.')
@minValue(1)
param deadLetterDeleteAfterDays int = 30

@description('Days a deleted blob or container can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No virtual network in this deployment: the Flex Consumption app, ACS (bring your own storage) and Event Grid dead-lettering reach the account over its public endpoint. Access is Entra ID only (allowSharedKeyAccess false), HTTPS and TLS 1.2+. Deny by default once VNet integration and private endpoints are added.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is needed without a virtual network; shared keys are disabled, so only identities granted a data role get in.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: redundancy
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource recordingsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: recordingsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: stateTableName
}

resource eventsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: eventsTableName
}

resource recordsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: recordsTableName
}

resource outboundTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: outboundTableName
}

// Lifecycle management: recordings age from Hot to Cool (and optionally Archive) and are deleted
// after the retention period; dead-lettered events are deleted after deadLetterDeleteAfterDays.
var coolAction = recordingsCoolAfterDays > 0 ? { tierToCool: { daysAfterModificationGreaterThan: recordingsCoolAfterDays } } : {}
var archiveAction = recordingsArchiveAfterDays > 0 ? { tierToArchive: { daysAfterModificationGreaterThan: recordingsArchiveAfterDays } } : {}
var deleteAction = recordingsDeleteAfterDays > 0 ? { delete: { daysAfterModificationGreaterThan: recordingsDeleteAfterDays } } : {}
var recordingsActions = union(coolAction, archiveAction, deleteAction)

var recordingsRules = empty(recordingsActions) ? [] : [
  {
    name: 'qa-recordings-retention'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${recordingsContainerName}/'
        ]
      }
      actions: {
        baseBlob: recordingsActions
      }
    }
  }
]

var deadLetterRules = [
  {
    name: 'eventgrid-deadletter-retention'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${deadLetterContainerName}/'
        ]
      }
      actions: {
        baseBlob: {
          delete: {
            daysAfterModificationGreaterThan: deadLetterDeleteAfterDays
          }
        }
      }
    }
  }
]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: concat(recordingsRules, deadLetterRules)
    }
  }
  dependsOn: [
    recordingsContainer
    deadLetterContainer
  ]
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output recordingsContainerName string = recordingsContainer.name
output deadLetterContainerName string = deadLetterContainer.name
output stateTableName string = stateTable.name
output eventsTableName string = eventsTable.name
output recordsTableName string = recordsTable.name
output outboundTableName string = outboundTable.name
