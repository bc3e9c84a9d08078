// Key Vault (RBAC authorization) holding CALLBACK_SECRET, the HMAC key of the per-call tokens
// in callback URLs, and during a rotation CALLBACK_SECRET_PREVIOUS, the key being rotated out.
// The Function App reads them through Key Vault references resolved with its host identity
// (Key Vault Secrets User on each secret alone, granted in roles.bicep).

@description('Key Vault name: 3-24 letters, digits and hyphens.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Value of the callback secret: base64 of 32 or more random bytes (44 characters or more).')
@secure()
@minLength(44)
param callbackSecret string

@description('The key being rotated out (CALLBACK_SECRET_PREVIOUS): callback URLs signed with it stay valid. Empty (the default): no rotation in progress, and no such secret is written.')
@secure()
param callbackSecretPrevious string = ''

@description('Name of the secret in the vault.')
param callbackSecretName string = 'callback-secret'

@description('Name of the secret holding the key being rotated out.')
param previousSecretName string = 'callback-secret-previous'

@description('Purge protection: a deleted vault cannot be purged before the retention period ends. Irreversible once on.')
param enablePurgeProtection bool = true

@description('Days a deleted vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_110:Purge protection is on by default (enablePurgeProtection = true); it is written `enablePurgeProtection ? true : null` because ARM rejects an explicit false, and checkov does not evaluate the conditional.
  // checkov:skip=CKV_AZURE_42:Recoverable: soft delete is on (enableSoftDelete, softDeleteRetentionInDays) and purge protection is on by default; see CKV_AZURE_110 for why checkov cannot see it.
  // checkov:skip=CKV_AZURE_109:No firewall: the Function App resolves its Key Vault reference over the public endpoint (Flex Consumption without virtual network integration; App Service is not a trusted service for the firewall bypass). Access is RBAC only, to one secret, for one identity.
  // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: public network access is needed for the Key Vault reference without a virtual network.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41:No expiration date: Key Vault refuses to return an expired secret, which would stop the app at a restart. The key is set once (the preprovision hook) and rotated on purpose with CALLBACK_SECRET_PREVIOUS (see infra/README.md).
  parent: vault
  name: callbackSecretName
  properties: {
    value: callbackSecret
    contentType: 'base64 HMAC key (CALLBACK_SECRET)'
    attributes: {
      enabled: true
    }
  }
}

// Written only during a rotation. When the rotation ends (callbackSecretPrevious empty again) the
// app setting stops referencing it; the secret itself stays in the vault, unread (a deployment never
// deletes), and is overwritten by the next rotation.
resource previousSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(callbackSecretPrevious)) {
  // checkov:skip=CKV_AZURE_41:No expiration date, as for the current key: an expired secret would stop the app at a restart in the middle of a rotation. It is written only while a rotation is in progress (see infra/README.md).
  // checkov:skip=CKV_AZURE_114:False positive: contentType is set below. checkov 3.3.30 reads the body of a conditional (`= if (...)`) resource one level too high (pycep nests it as config.config), so it finds no properties.
  parent: vault
  name: previousSecretName
  properties: {
    value: callbackSecretPrevious
    contentType: 'base64 HMAC key being rotated out (CALLBACK_SECRET_PREVIOUS)'
    attributes: {
      enabled: true
    }
  }
}

output name string = vault.name
output id string = vault.id
output callbackSecretName string = secret.name
output callbackSecretPreviousName string = previousSecretName
