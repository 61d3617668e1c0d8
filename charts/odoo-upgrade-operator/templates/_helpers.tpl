{{/* The chart's name, for labels. */}}
{{- define "odoo-upgrade-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the release's objects: the release name, suffixed by the chart's unless it has it. */}}
{{- define "odoo-upgrade-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. Never `managed-by: odoo-upgrade-operator`: that marks mover Jobs. */}}
{{- define "odoo-upgrade-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "odoo-upgrade-operator.selectorLabels" . }}
app.kubernetes.io/part-of: odoo-upgrade-operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the operator pod. */}}
{{- define "odoo-upgrade-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "odoo-upgrade-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "odoo-upgrade-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "odoo-upgrade-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's image reference: repository:tag, or repository@digest when pinned. */}}
{{- define "odoo-upgrade-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
