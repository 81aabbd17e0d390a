{{/*
The chart's own values, which live under the `auth-callout` key as in the event-bus
chart. Standalone, Helm hands them over as .Values["auth-callout"]. As the
`auth-callout` subchart of an umbrella chart, the parent's `auth-callout:` block arrives
at the top of .Values instead, beside this chart's own defaults under "auth-callout": the
top level wins. `global` is global either way.
*/}}
{{- define "nats-callout.values" -}}
{{- $defaults := index .Values "auth-callout" | default dict -}}
{{- $parent := omit .Values "auth-callout" "global" -}}
{{- toYaml (mergeOverwrite (deepCopy $defaults) $parent) -}}
{{- end -}}

{{- define "nats-callout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nats-callout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nats-callout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nats-callout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nats-callout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "nats-callout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The `permissions` section of the host config: the modes of
global.eventBus.auth.permissions that have content. None at all fails the release here,
with what to set: a release must not start admitting anyone (anonymous clients least of
all) by default. tests/tests/helm.rs checks both.
*/}}
{{- define "nats-callout.permissions" -}}
{{- $configured := dig "eventBus" "auth" "permissions" (dict) (.Values.global | default dict) -}}
{{- $permissions := dict -}}
{{- range $mode, $section := $configured -}}
{{- if $section -}}
{{- $_ := set $permissions $mode $section -}}
{{- end -}}
{{- end -}}
{{- if not $permissions -}}
{{- fail "global.eventBus.auth.permissions enables no mode: configure at least one of oauth2, mtls, nkey, password, jwt or noauth (noauth admits anonymous clients; leave it out in production)" -}}
{{- end -}}
{{- toYaml $permissions -}}
{{- end -}}

{{/*
The host config file: serviceConfig as it stands, plus permissions, plus (mTLS on) the
mTLS cluster's `nats` entry, which logs in with the client certificate Secret and trusts
the server's CA.
*/}}
{{- define "nats-callout.config" -}}
{{- $v := include "nats-callout.values" . | fromYaml -}}
{{- $config := deepCopy $v.serviceConfig -}}
{{- $_ := set $config "permissions" (include "nats-callout.permissions" . | fromYaml) -}}
{{- if include "nats-callout.mtlsEnabled" . -}}
{{- $mtls := .Values.global.eventBus.mtls -}}
{{- $entry := dict "name" "mtls" "url" ($mtls.url | default "tls://nats-mtls:4222") -}}
{{- $tls := dict "ca_file" (printf "/etc/nats-callout/mtls/%s" ($mtls.caKey | default "ca.crt")) -}}
{{- $_ := set $tls "cert_file" "/etc/nats-callout/client-tls/tls.crt" -}}
{{- $_ := set $tls "key_file" "/etc/nats-callout/client-tls/tls.key" -}}
{{- $_ := set $entry "tls" $tls -}}
{{- range $config.nats -}}
{{- if eq .name "mtls" -}}
{{- fail "serviceConfig.nats has an entry named mtls, and global.eventBus.mtls.enabled adds one: remove it (set global.eventBus.mtls.url instead)" -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "nats" (append ($config.nats | default list) $entry) -}}
{{- end -}}
{{- if include "nats-callout.operatorEnabled" . -}}
{{- $_ := set $config "operator" (include "nats-callout.operator" . | fromYaml) -}}
{{- $nats := list -}}
{{- range $config.nats -}}
{{- $entry := deepCopy . -}}
{{- if not (or $entry.credentials_file $entry.user $entry.nkey_seed_file) -}}
{{- $_ := set $entry "credentials_file" (printf "/etc/nats-callout/operator/keys/%s" ($v.operator.credsKey | default "callout.creds")) -}}
{{- end -}}
{{- $nats = append $nats $entry -}}
{{- end -}}
{{- $_ := set $config "nats" $nats -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "nats-callout.operatorEnabled" -}}
{{- $v := include "nats-callout.values" . | fromYaml -}}
{{- if dig "operator" "enabled" false $v -}}true{{- end -}}
{{- end -}}

{{/*
Operator mode: the config's `operator` section, its files where the Deployment mounts
them (account JWTs from a ConfigMap, signing seeds and creds from a Secret).
*/}}
{{- define "nats-callout.operator" -}}
{{- $v := include "nats-callout.values" . | fromYaml -}}
{{- $op := $v.operator -}}
{{- if hasKey $v.serviceConfig "operator" -}}
{{- fail "serviceConfig has an operator section, and auth-callout.operator.enabled writes one: set auth-callout.operator instead" -}}
{{- end -}}
{{- if not $op.accounts -}}
{{- fail "auth-callout.operator.accounts names no account: list the accounts grants may name in account: (e.g. [DEVICES, ANONYMOUS]); each needs <NAME>.jwt in jwtConfigMapName and <NAME>.sk in secretName" -}}
{{- end -}}
{{- $accounts := dict -}}
{{- range $op.accounts -}}
{{- $_ := set $accounts . (dict "jwt_file" (printf "/etc/nats-callout/operator/jwts/%s.jwt" .) "signing_key_file" (printf "/etc/nats-callout/operator/keys/%s.sk" .)) -}}
{{- end -}}
{{- toYaml (dict "callout_account_jwt_file" (printf "/etc/nats-callout/operator/jwts/%s.jwt" ($op.calloutAccount | default "AUTH")) "accounts" $accounts) -}}
{{- end -}}

{{- define "nats-callout.mtlsEnabled" -}}
{{- if dig "eventBus" "mtls" "enabled" false (.Values.global | default dict) -}}true{{- end -}}
{{- end -}}
