{{- define "sidelight.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sidelight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sidelight.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sidelight.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sidelight.labels" -}}
{{ include "sidelight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sidelight.resourceAttributes" -}}
{{- $attrs := list -}}
{{- if .Values.clusterName -}}
{{- $attrs = append $attrs (printf "k8s.cluster.name=%s" (urlquery .Values.clusterName | replace "+" "%20")) -}}
{{- end -}}
{{- range $k, $v := .Values.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%s" $k (urlquery (toString $v) | replace "+" "%20")) -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end -}}
