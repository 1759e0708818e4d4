{{/*
Optional KEDA autoscaling on the pipeline's backlog (disabled by default). The scheduler
replica owning the pipeline exports `wsched_pipeline_backlog{pipeline="<id>"}`; the
query and the target per replica can be replaced under `scaling.keda`.
*/}}
{{- define "pipeline-lib.scaledobject" -}}
{{- $v := .Values.AsMap -}}
{{- $id := dig "pipelineId" "" $v -}}
{{- $default := printf "sum(wsched_pipeline_backlog{pipeline=%q}) + sum(wsched_pipeline_leased{pipeline=%q})" $id $id -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "pipeline-lib.fullname" . }}
  labels:
    {{- include "pipeline-lib.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "pipeline-lib.fullname" . }}
  minReplicaCount: {{ dig "scaling" "min_replicas" 1 $v | int }}
  maxReplicaCount: {{ dig "scaling" "max_replicas" 10 $v | int }}
  pollingInterval: {{ dig "scaling" "keda" "pollingInterval" 15 $v | int }}
  cooldownPeriod: {{ dig "scaling" "keda" "cooldownPeriod" 300 $v | int }}
  triggers:
    - type: prometheus
      metadata:
        serverAddress: {{ dig "scaling" "keda" "prometheus" "serverAddress" "http://prometheus-server.monitoring.svc:9090" $v | quote }}
        query: {{ dig "scaling" "keda" "prometheus" "query" $default $v | quote }}
        threshold: {{ dig "scaling" "keda" "prometheus" "threshold" "10" $v | toString | quote }}
{{- end -}}
