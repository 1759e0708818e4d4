{{/* The pipeline definition the agent runs, from values `pipeline:` (the list of steps),
     `non_retryable_exit_codes:` (exit codes that end a task at once, not retried) and
     `timeout_s:` (the definition's execution timeout, below the task's and the
     pipeline's own). */}}
{{- define "pipeline-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "pipeline-lib.fullname" . }}-pipeline
  labels:
    {{- include "pipeline-lib.labels" . | nindent 4 }}
data:
  pipeline.json: |
    {{- $definition := dict "pipeline" (include "pipeline-lib.steps" . | fromYamlArray) }}
    {{- with .Values.non_retryable_exit_codes }}
    {{- $_ := set $definition "non_retryable_exit_codes" . }}
    {{- end }}
    {{- with .Values.timeout_s }}
    {{- $_ := set $definition "timeout_s" . }}
    {{- end }}
    {{- $definition | toPrettyJson | nindent 4 }}
{{- end -}}
