{{/* Chart name, truncated to 63 characters. */}}
{{- define "reservation-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name already contains the chart name. */}}
{{- define "reservation-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* name-version for the helm.sh/chart label. */}}
{{- define "reservation-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The namespace of every object: namespaceOverride, else the release's. */}}
{{- define "reservation-worker.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: the chart's own and commonLabels (never in selectors). */}}
{{- define "reservation-worker.labels" -}}
{{- include "reservation-worker.labelsWith" (dict "ctx" . "extra" dict) }}
{{- end }}

{{/*
The chart's own labels, then commonLabels merged with an object's extra labels, which win on the same
key (dict "ctx" $ "extra" $labels): each key once. commonLabels cannot name the chart's own keys (schema).
*/}}
{{- define "reservation-worker.labelsWith" -}}
helm.sh/chart: {{ include "reservation-worker.chart" .ctx }}
{{ include "reservation-worker.selectorLabels" .ctx }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/component: worker
{{- with merge (dict) (.extra | default dict) (.ctx.Values.commonLabels | default dict) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels (immutable on a Deployment: keep them small). */}}
{{- define "reservation-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reservation-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The worker's image: repository@digest when a digest is given (it wins over the tag), else repository:tag. */}}
{{- define "reservation-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES: k8s.namespace.name, k8s.node.name and k8s.pod.name from the downward API
(POD_NAMESPACE, NODE_NAME, POD_NAME), then worker.otel.resourceAttributes; a key given there replaces ours.
*/}}
{{- define "reservation-worker.resourceAttributes" -}}
{{- $user := .Values.worker.otel.resourceAttributes | trim }}
{{- $userKeys := list }}
{{- range splitList "," $user }}
{{- $userKeys = append $userKeys (splitList "=" . | first | trim) }}
{{- end }}
{{- $attrs := list }}
{{- range list (list "k8s.namespace.name" "$(POD_NAMESPACE)") (list "k8s.node.name" "$(NODE_NAME)") (list "k8s.pod.name" "$(POD_NAME)") }}
{{- if not (has (first .) $userKeys) }}
{{- $attrs = append $attrs (printf "%s=%s" (first .) (last .)) }}
{{- end }}
{{- end }}
{{- if $user }}
{{- $attrs = append $attrs $user }}
{{- end }}
{{- join "," $attrs }}
{{- end }}

{{/*
The port spans are sent to: that of worker.otel.tracesEndpoint (used as-is) else of worker.otel.endpoint.
A URL without a port connects to its scheme's (80, 443), as the exporter's HTTP and gRPC clients do; OTLP's
4317/4318 are only the defaults of an unset endpoint, and tracing is off then.
*/}}
{{- define "reservation-worker.otlpPort" -}}
{{- $url := default .Values.worker.otel.endpoint .Values.worker.otel.tracesEndpoint }}
{{- $u := urlParse $url }}
{{- regexFind ":[0-9]+$" $u.host | trimPrefix ":" | default (ternary "443" "80" (eq $u.scheme "https")) }}
{{- end }}

{{/* "true" when extraEnv has an entry named .name: (dict "ctx" $ "name" "VAR"). */}}
{{- define "reservation-worker.inExtraEnv" -}}
{{- range .ctx.Values.extraEnv }}
{{- if eq (toString .name) $.name }}true{{ end }}
{{- end }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "reservation-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reservation-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* One value drives both: the pod's grace period is the worker's shutdown timeout plus a margin. */}}
{{- define "reservation-worker.terminationGracePeriodSeconds" -}}
{{- add (int .Values.worker.shutdownTimeoutSeconds) (int .Values.terminationGraceExtraSeconds) }}
{{- end }}

{{/* The queue URL, required unless Secrets Manager supplies it (KEDA always needs it). No default:
     a placeholder would deploy a worker polling a queue that is not yours. */}}
{{- define "reservation-worker.queueUrl" -}}
{{- if or .Values.keda.enabled (not .Values.worker.secretManager.enabled) }}
{{- $why := ternary " (KEDA's trigger needs it even when Secrets Manager supplies it to the worker)" "" .Values.worker.secretManager.enabled }}
{{- required (printf "worker.sqsQueueUrl is required: the SQS queue URL, e.g. https://sqs.ap-northeast-2.amazonaws.com/123456789012/reservation-events%s" $why) .Values.worker.sqsQueueUrl }}
{{- else }}
{{- .Values.worker.sqsQueueUrl }}
{{- end }}
{{- end }}

{{/*
KEDA's target messages per replica: keda.queueLength, or when 0, 80 % of worker.concurrency, so
that scaling keeps each pod's slots about 80 % busy (docs/performance.md, "Capacity model").
*/}}
{{- define "reservation-worker.queueLength" -}}
{{- $explicit := int .Values.keda.queueLength }}
{{- if gt $explicit 0 }}{{ $explicit }}{{ else }}{{ max 1 (div (mul (int .Values.worker.concurrency) 4) 5) }}{{ end }}
{{- end }}

{{/* The AWS region of the KEDA trigger: keda.awsRegion, else the worker's. */}}
{{- define "reservation-worker.kedaRegion" -}}
{{- default .Values.worker.awsRegion .Values.keda.awsRegion }}
{{- end }}
