# azd preprovision hook (Windows): the same as preprovision.sh. Makes CALLBACK_SECRET once: when
# the azd environment has none, 48 random bytes (base64) are generated and stored in it with
# `azd env set`; when it has one, it is kept. main.bicep has no random default, so a deployment
# never changes the key by itself (rotation: infra/README.md). The value is never printed.
$ErrorActionPreference = 'Stop'

if (-not (Get-Command azd -ErrorAction SilentlyContinue)) {
    throw 'preprovision: azd is required (this hook runs under azd provision / azd up)'
}

$current = ''
try {
    $current = (azd env get-value CALLBACK_SECRET 2>$null | Out-String).Trim()
    if ($LASTEXITCODE -ne 0 -or $current -match 'not found' -or $current -like 'ERROR*') { $current = '' }
} catch {
    $current = ''
}
if ($current) {
    Write-Host 'preprovision: CALLBACK_SECRET is set in the azd environment; keeping it'
    exit 0
}

$bytes = [byte[]]::new(48)
[System.Security.Cryptography.RandomNumberGenerator]::Fill($bytes)
$secret = [Convert]::ToBase64String($bytes)
if ($secret.Length -lt 64) { throw 'preprovision: could not generate CALLBACK_SECRET' }
azd env set CALLBACK_SECRET $secret | Out-Null
if ($LASTEXITCODE -ne 0) { throw 'preprovision: azd env set CALLBACK_SECRET failed' }
Write-Host 'preprovision: generated CALLBACK_SECRET (48 random bytes) and stored it in the azd environment'
