{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "bkg.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-bkg, or the release name alone when it already says bkg; at most 40 characters so
     that suffixed names (…-operator-metrics) stay DNS labels. */}}
{{- define "bkg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "bkg.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bkg.operator.fullname" -}}{{ include "bkg.fullname" . }}-operator{{- end -}}
{{- define "bkg.gateway.fullname" -}}{{ include "bkg.fullname" . }}-gateway{{- end -}}
{{- define "bkg.leaseName" -}}{{ include "bkg.fullname" . }}-operator{{- end -}}

{{- define "bkg.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- .Values.operator.serviceAccount.name | default (include "bkg.operator.fullname" .) -}}
{{- else -}}
{{- .Values.operator.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "bkg.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- .Values.gateway.serviceAccount.name | default (include "bkg.gateway.fullname" .) -}}
{{- else -}}
{{- .Values.gateway.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Where the Plugins live (and their pods run). */}}
{{- define "bkg.pluginsNamespace" -}}
{{- .Values.plugins.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "bkg.apiKeysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "bkg.fullname" .)) -}}
{{- end -}}

{{- define "bkg.apiKeysSecretKey" -}}
{{- if .Values.apiKeys.existingSecret -}}{{ .Values.apiKeys.existingSecretKey }}{{- else -}}keys.yaml{{- end -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------- */}}

{{- define "bkg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "bkg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bkg
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). Never changes
     between upgrades (a Deployment's selector is immutable). */}}
{{- define "bkg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bkg.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bkg.componentLabels" -}}
{{ include "bkg.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The labels the operator puts on every plugin runtime pod (operator/src/k8s/build.rs). */}}
{{- define "bkg.pluginPodLabels" -}}
app.kubernetes.io/name: bkg-plugin
app.kubernetes.io/component: plugin-runtime
app.kubernetes.io/managed-by: bkg-operator
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------- */}}

{{/* repository:tag[@digest] from (dict "image" .Values.images.x "tag" "<default tag>"). */}}
{{- define "bkg.image" -}}
{{- $tag := .image.tag | default .tag -}}
{{- if and .image.digest $tag -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "bkg.controlImage" -}}
{{- include "bkg.image" (dict "image" .Values.images.control "tag" .Chart.AppVersion) -}}
{{- end -}}

{{/* Pod pieces shared by operator and gateway ------------------------------------------------- */}}

{{/* Restricted pod security: non-root (distroless nonroot uid), RuntimeDefault seccomp. */}}
{{- define "bkg.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bkg.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* NetworkPolicy egress rules both control-plane pods need: DNS, the API server, OTLP. */}}
{{- define "bkg.controlEgress" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- ports:
    {{- range .Values.networkPolicy.egress.apiServerPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- with .Values.networkPolicy.egress.apiServerCidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- if or .Values.otel.endpoint .Values.otel.runtimeEndpoint }}
- ports:
    {{- range .Values.networkPolicy.egress.otlpPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- with .Values.networkPolicy.egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* checkov's annotations for accepted exceptions, from a list of "CHECK_ID=why" strings (the
     why must not contain "="):
     checkov.io/skip1, skip2, … (read by checkov from the object's own metadata). */}}
{{- define "bkg.checkovSkips" -}}
{{- range $i, $skip := . }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end -}}

{{/* The exceptions every workload of the chart shares, for (dict "image" <image values>
     "what" "images.control"): a tag (no digest) and, then, IfNotPresent. */}}
{{- define "bkg.imageSkips" -}}
{{- $skips := list -}}
{{- if not .image.digest -}}
{{- $skips = append $skips (printf "CKV_K8S_43=Referenced by tag, as released; set %s.digest to pin the image by digest." .what) -}}
{{- if ne .image.pullPolicy "Always" -}}
{{- $skips = append $skips (printf "CKV_K8S_15=Release tags are immutable, so IfNotPresent saves a registry round trip per pod start; set %s.pullPolicy to Always, or a digest." .what) -}}
{{- end -}}
{{- end -}}
{{- toJson $skips -}}
{{- end -}}
