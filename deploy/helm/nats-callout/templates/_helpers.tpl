{{/* The chart's own values live under the `auth-callout` key, as in the event-bus chart. */}}
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
global.eventBus.auth.permissions that have content, or auth-callout.fallbackPermissions
when there is none. tests/tests/helm.rs mirrors exactly this rule; change both together.
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
{{- $permissions = (index .Values "auth-callout").fallbackPermissions | default dict -}}
{{- end -}}
{{- toYaml $permissions -}}
{{- end -}}

{{/* The host config file: serviceConfig as it stands, plus permissions. */}}
{{- define "nats-callout.config" -}}
{{- $config := deepCopy (index .Values "auth-callout").serviceConfig -}}
{{- $_ := set $config "permissions" (include "nats-callout.permissions" . | fromYaml) -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "nats-callout.mtlsEnabled" -}}
{{- if dig "eventBus" "mtls" "enabled" false (.Values.global | default dict) -}}true{{- end -}}
{{- end -}}
