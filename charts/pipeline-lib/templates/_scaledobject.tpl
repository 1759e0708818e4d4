{{/*
Optional KEDA autoscaling on the pipeline's queue (disabled by default). The scheduler
replica owning the pipeline exports the seed design's gauge
`server_scheduler_queue_length{worker="<release name>",namespace="<release namespace>"}`:
the tasks waiting for a worker, labelled with this Helm release and its namespace. The
query and the target per replica can be replaced under `scaling.keda`.
*/}}
{{- define "pipeline-lib.scaledobject" -}}
{{- $v := .Values.AsMap -}}
{{- $default := printf "sum(server_scheduler_queue_length{worker=%q,namespace=%q})" .Release.Name .Release.Namespace -}}
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
