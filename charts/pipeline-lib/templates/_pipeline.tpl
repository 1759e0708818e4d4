{{/*
Everything a pipeline chart deploys. A pipeline chart's only template is:

  {{ include "pipeline-lib.pipeline" . }}
*/}}
{{- define "pipeline-lib.pipeline" -}}
{{ include "pipeline-lib.configmap" . }}
{{- if not (dig "workerToken" "existingSecret" "" .Values.AsMap) }}
---
{{ include "pipeline-lib.secret" . }}
{{- end }}
---
{{ include "pipeline-lib.deployment" . }}
{{- if dig "scaling" "keda" "enabled" false .Values.AsMap }}
---
{{ include "pipeline-lib.scaledobject" . }}
{{- end }}
{{- end -}}
