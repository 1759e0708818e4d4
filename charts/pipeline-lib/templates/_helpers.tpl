{{/*
Names, labels and small values shared by the pipeline-lib templates.

Optional values are read with `dig` on `.Values.AsMap` and a default: `dig` keeps an
explicit `false` or `0` (scale to zero), which sprig's merge functions would treat as
"unset".
*/}}

{{/* The base name of every object; room is left for the longest suffix ("-worker-token"). */}}
{{- define "pipeline-lib.fullname" -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{- define "pipeline-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "pipeline-lib.labels" -}}
{{ include "pipeline-lib.selectorLabels" . }}
app.kubernetes.io/component: pipeline-worker
app.kubernetes.io/part-of: workload-scheduler
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with (dig "pipelineId" "" .Values.AsMap) }}
wsched.io/pipeline-id: {{ . | trunc 63 | quote }}
{{- end }}
{{- end -}}

{{/* The shared work volume: executors' sockets and each task's work directory. */}}
{{- define "pipeline-lib.pipeDir" -}}/mnt/pipe{{- end -}}

{{/* A container name from an executor name (which may hold "_" and "."). */}}
{{- define "pipeline-lib.executorContainer" -}}
{{- printf "executor-%s" (. | lower | replace "_" "-" | replace "." "-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "echo=unix:///mnt/pipe/echo.sock,..." for WSCHED_WORKER_EXECUTORS (sorted by name). */}}
{{- define "pipeline-lib.executorAddresses" -}}
{{- $pipe := include "pipeline-lib.pipeDir" . -}}
{{- $pairs := list -}}
{{- range $name, $_ := (include "pipeline-lib.executors" . | fromYaml) -}}
{{- $pairs = append $pairs (printf "%s=unix://%s/%s.sock" $name $pipe $name) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* The executors map, checked: every executor the definition names must be in it. */}}
{{- define "pipeline-lib.executors" -}}
{{- $executors := dig "executors" dict .Values.AsMap -}}
{{- if not $executors -}}
{{- fail "values.executors is empty: list each executor of the pipeline by name, with its image (executors: {NAME: {image: {repository: REPO, tag: TAG}}})" -}}
{{- end -}}
{{- range $step := (include "pipeline-lib.steps" . | fromYamlArray) -}}
{{- if not (hasKey $executors $step.executor) -}}
{{- fail (printf "values.pipeline names executor %q, which values.executors does not list" $step.executor) -}}
{{- end -}}
{{- end -}}
{{- toYaml $executors -}}
{{- end -}}

{{/* The definition's steps, checked to be a non-empty list. */}}
{{- define "pipeline-lib.steps" -}}
{{- $steps := dig "pipeline" list .Values.AsMap -}}
{{- if or (not $steps) (not (kindIs "slice" $steps)) -}}
{{- fail "values.pipeline must be a non-empty list of steps, each {executor: NAME, commands: [COMMAND, ...]}" -}}
{{- end -}}
{{- toYaml $steps -}}
{{- end -}}

{{/* The agent's image; an executor without an image of its own runs in it too. */}}
{{- define "pipeline-lib.image" -}}
{{- $image := dig "image" dict .root.Values.AsMap -}}
{{- $own := .image | default dict -}}
{{- $repository := $own.repository | default $image.repository | default "ghcr.io/workload-scheduler/wsched" -}}
{{- $tag := $own.tag | default $image.tag | default .root.Chart.AppVersion | default "latest" -}}
{{- printf "%s:%s" $repository (toString $tag) -}}
{{- end -}}

{{- define "pipeline-lib.graceSeconds" -}}
{{- dig "agent" "grace_s" 30 .Values.AsMap | int -}}
{{- end -}}

{{- define "pipeline-lib.secretName" -}}
{{- dig "workerToken" "existingSecret" "" .Values.AsMap | default (printf "%s-worker-token" (include "pipeline-lib.fullname" .)) -}}
{{- end -}}

{{/* OTEL_RESOURCE_ATTRIBUTES of the agent: its pod (WSCHED_WORKER_NAME, set before it in
the container's env), namespace, Deployment and pipeline. */}}
{{- define "pipeline-lib.resourceAttributes" -}}
{{- $attributes := list
  "service.instance.id=$(WSCHED_WORKER_NAME)"
  "k8s.pod.name=$(WSCHED_WORKER_NAME)"
  (printf "k8s.namespace.name=%s" .Release.Namespace)
  (printf "k8s.deployment.name=%s" (include "pipeline-lib.fullname" .)) -}}
{{- with (dig "pipelineId" "" .Values.AsMap) }}
{{- $attributes = append $attributes (printf "wsched.pipeline_id=%s" .) -}}
{{- end }}
{{- join "," $attributes -}}
{{- end -}}
