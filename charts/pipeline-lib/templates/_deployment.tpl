{{/*
The worker pods: the agent (`wsched worker`) and one `wsched executor` per executor, each
in its own image, all sharing the emptyDir at /mnt/pipe (the executors' Unix sockets and
each task's work directory).

Shutdown order matters: the agent needs its executors until its last task is reported.
As plain containers the executors get SIGTERM with the agent, so they serve on for the
agent's grace plus ten seconds; as native sidecars (`nativeSidecars: true`, Kubernetes
1.29+) Kubernetes stops them after the agent, so they stop at once.
*/}}
{{- define "pipeline-lib.deployment" -}}
{{- $v := .Values.AsMap -}}
{{- $grace := include "pipeline-lib.graceSeconds" . | int -}}
{{- /* Replicas are left to whoever scales the Deployment (KEDA or the scheduler's
built-in scaler), so that a `helm upgrade` does not reset what it set. */ -}}
{{- $scaled := or (dig "scaling" "keda" "enabled" false $v) (eq (toString (dig "scaling" "autoscaler" "" $v)) "builtin") -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "pipeline-lib.fullname" . }}
  labels:
    {{- include "pipeline-lib.labels" . | nindent 4 }}
spec:
  {{- if not $scaled }}
  replicas: {{ dig "scaling" "min_replicas" 1 $v | int }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "pipeline-lib.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pipeline-lib.labels" . | nindent 8 }}
        {{- with (dig "podLabels" dict $v) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # A changed definition rolls the pods.
        checksum/pipeline: {{ include "pipeline-lib.configmap" . | sha256sum }}
        {{- with (dig "podAnnotations" dict $v) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      # The pause container reaps what executed commands orphan.
      shareProcessNamespace: {{ dig "shareProcessNamespace" true $v }}
      terminationGracePeriodSeconds: {{ dig "terminationGracePeriodSeconds" (add $grace 20) $v | int }}
      automountServiceAccountToken: false
      securityContext:
        {{- dig "podSecurityContext" (include "pipeline-lib.podSecurityContext" . | fromYaml) $v | toYaml | nindent 8 }}
      {{- with (dig "imagePullSecrets" list $v) }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if dig "nativeSidecars" false $v }}
      initContainers:
        {{- include "pipeline-lib.executorContainers" (dict "root" . "sidecar" true) | trim | nindent 8 }}
      containers:
        {{- include "pipeline-lib.agentContainer" . | nindent 8 }}
      {{- else }}
      containers:
        {{- include "pipeline-lib.agentContainer" . | nindent 8 }}
        {{- include "pipeline-lib.executorContainers" (dict "root" . "sidecar" false) | trim | nindent 8 }}
      {{- end }}
      volumes:
        - name: pipe
          emptyDir:
            {{- with (dig "pipeVolume" "sizeLimit" "" $v) }}
            sizeLimit: {{ . }}
            {{- else }} {}
            {{- end }}
        - name: definition
          configMap:
            name: {{ include "pipeline-lib.fullname" . }}-pipeline
      {{- with (dig "nodeSelector" dict $v) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (dig "tolerations" list $v) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (dig "affinity" dict $v) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{- define "pipeline-lib.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
# The shared volume belongs to this group, so every container can use the work directories.
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "pipeline-lib.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "pipeline-lib.agentContainer" -}}
{{- $v := .Values.AsMap -}}
{{- $pipe := include "pipeline-lib.pipeDir" . -}}
- name: agent
  image: {{ include "pipeline-lib.image" (dict "root" .) }}
  imagePullPolicy: {{ dig "image" "pullPolicy" "IfNotPresent" $v }}
  command: ["wsched", "worker"]
  env:
    - name: WSCHED_WORKER_SCHEDULER
      value: {{ dig "scheduler" "address" "wsched-scheduler:50051" $v | quote }}
    - name: WSCHED_WORKER_PIPELINE_ID
      value: {{ dig "pipelineId" "" $v | quote }}
    - name: WSCHED_WORKER_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "pipeline-lib.secretName" . }}
          key: token
    - name: WSCHED_WORKER_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: WSCHED_WORKER_DEFINITION
      value: /etc/wsched/pipeline.json
    - name: WSCHED_WORKER_EXECUTORS
      value: {{ include "pipeline-lib.executorAddresses" . | quote }}
    - name: WSCHED_WORKER_WORKDIR
      value: {{ $pipe | quote }}
    - name: WSCHED_WORKER_CONCURRENCY
      value: {{ dig "agent" "concurrency" 4 $v | int | quote }}
    - name: WSCHED_WORKER_GRACE_S
      value: {{ include "pipeline-lib.graceSeconds" . | quote }}
    - name: WSCHED_WORKER_TASK_TIMEOUT_S
      value: {{ dig "agent" "task_timeout_s" 3600 $v | int | quote }}
    {{- with (dig "observability" "otlp_endpoint" "" $v) }}
    - name: WSCHED_WORKER_OTLP_ENDPOINT
      value: {{ . | quote }}
    # The spans' service is wsched-worker; these say which pod of which pipeline sent them.
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: {{ include "pipeline-lib.resourceAttributes" $ | quote }}
    {{- end }}
    {{- with (dig "observability" "log_format" "" $v) }}
    - name: WSCHED_WORKER_LOG_FORMAT
      value: {{ . | quote }}
    {{- end }}
    {{- with (dig "agent" "env" list $v) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumeMounts:
    - name: pipe
      mountPath: {{ $pipe }}
    - name: definition
      mountPath: /etc/wsched
      readOnly: true
  {{- if dig "probes" "enabled" true $v }}
  # Ready once every executor listens on its socket.
  readinessProbe:
    exec:
      command:
        - /bin/sh
        - -c
        - {{ include "pipeline-lib.socketsExist" . | quote }}
    periodSeconds: 5
    failureThreshold: 3
  {{- end }}
  {{- with (dig "agent" "resources" dict $v) }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- dig "securityContext" (include "pipeline-lib.containerSecurityContext" . | fromYaml) $v | toYaml | nindent 4 }}
{{- end -}}

{{- define "pipeline-lib.socketsExist" -}}
{{- $pipe := include "pipeline-lib.pipeDir" . -}}
{{- $tests := list -}}
{{- range $name, $_ := (include "pipeline-lib.executors" . | fromYaml) -}}
{{- $tests = append $tests (printf "test -S %s/%s.sock" $pipe $name) -}}
{{- end -}}
{{- join " && " $tests -}}
{{- end -}}

{{/* One container per executor; called with (dict "root" . "sidecar" bool). */}}
{{- define "pipeline-lib.executorContainers" -}}
{{- $root := .root -}}
{{- $sidecar := .sidecar -}}
{{- $v := $root.Values.AsMap -}}
{{- $pipe := include "pipeline-lib.pipeDir" $root -}}
{{- $grace := include "pipeline-lib.graceSeconds" $root | int -}}
{{- range $name, $executor := (include "pipeline-lib.executors" $root | fromYaml) }}
{{- $executor = $executor | default dict }}
{{- $socket := printf "%s/%s.sock" $pipe $name }}
- name: {{ include "pipeline-lib.executorContainer" $name }}
  image: {{ include "pipeline-lib.image" (dict "root" $root "image" $executor.image) }}
  imagePullPolicy: {{ dig "image" "pullPolicy" (dig "image" "pullPolicy" "IfNotPresent" $v) $executor }}
  {{- if $sidecar }}
  restartPolicy: Always
  {{- end }}
  command: ["wsched", "executor", "--listen", {{ printf "unix://%s" $socket | quote }}]
  env:
    # Serve on after SIGTERM while the agent finishes (a sidecar is stopped after it).
    - name: WSCHED_WORKER_EXECUTOR_GRACE_S
      value: {{ ternary 0 (add $grace 10) $sidecar | quote }}
    {{- with (dig "observability" "log_format" "" $v) }}
    - name: WSCHED_WORKER_EXECUTOR_LOG_FORMAT
      value: {{ . | quote }}
    {{- end }}
    {{- with $executor.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumeMounts:
    - name: pipe
      mountPath: {{ $pipe }}
  {{- if dig "probes" "enabled" true $v }}
  {{- if $sidecar }}
  # The agent starts once every sidecar has passed its startup probe.
  startupProbe:
    exec:
      command: ["test", "-S", {{ $socket | quote }}]
    periodSeconds: 1
    failureThreshold: 60
  {{- else }}
  readinessProbe:
    exec:
      command: ["test", "-S", {{ $socket | quote }}]
    periodSeconds: 5
  {{- end }}
  livenessProbe:
    exec:
      command: ["test", "-S", {{ $socket | quote }}]
    initialDelaySeconds: 10
    periodSeconds: 10
    failureThreshold: 3
  {{- end }}
  {{- with $executor.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- dig "securityContext" (include "pipeline-lib.containerSecurityContext" $root | fromYaml) $v | toYaml | nindent 4 }}
{{- end }}
{{- end -}}
