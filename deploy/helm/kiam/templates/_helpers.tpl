{{- define "kiam.labels" -}}
app.kubernetes.io/name: kiam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "kiam.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- define "kiam.logArgs" -}}
{{- if .Values.logJson }}
- --json-log
{{- end }}
- --level={{ .Values.logLevel }}
{{- end -}}
