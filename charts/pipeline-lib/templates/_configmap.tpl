{{/* The pipeline definition the agent runs, from values `pipeline:` (the list of steps). */}}
{{- define "pipeline-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "pipeline-lib.fullname" . }}-pipeline
  labels:
    {{- include "pipeline-lib.labels" . | nindent 4 }}
data:
  pipeline.json: |
    {{- dict "pipeline" (include "pipeline-lib.steps" . | fromYamlArray) | toPrettyJson | nindent 4 }}
{{- end -}}
