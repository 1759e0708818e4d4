{{/*
The worker token the agent authenticates with. The deployer sets `workerToken.value`;
with `workerToken.existingSecret` (a Secret holding the key `token`) none is rendered.
*/}}
{{- define "pipeline-lib.secret" -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "pipeline-lib.secretName" . }}
  labels:
    {{- include "pipeline-lib.labels" . | nindent 4 }}
type: Opaque
data:
  token: {{ dig "workerToken" "value" "" .Values.AsMap | b64enc | quote }}
{{- end -}}
