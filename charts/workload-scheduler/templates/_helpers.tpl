{{/*
Names, labels and the environment shared by the templates.
*/}}

{{- define "wsched.name" -}}
{{- .Values.nameOverride | default "wsched" | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base name of every object. 40 characters leave room for the longest suffix
("-scheduler-headless") within the 63 of a Service name.
*/}}
{{- define "wsched.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "wsched.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wsched.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Called with (dict "root" . "component" "api"). */}}
{{- define "wsched.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsched.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wsched.labels" -}}
{{ include "wsched.selectorLabels" . }}
app.kubernetes.io/part-of: workload-scheduler
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "wsched.chart" .root }}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace: two releases may share a fullname. */}}
{{- define "wsched.clusterName" -}}
{{- printf "%s-%s-%s" .root.Release.Namespace (include "wsched.fullname" .root) .component -}}
{{- end -}}

{{/* The ClusterRole bound to each tenant's ServiceAccount in its namespace. */}}
{{- define "wsched.tenantRole" -}}
{{- include "wsched.clusterName" (dict "root" . "component" "tenant") -}}
{{- end -}}

{{- define "wsched.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{- define "wsched.serviceAccountName" -}}
{{- $sa := index .root.Values.serviceAccount .component -}}
{{- if .root.Values.serviceAccount.create -}}
{{- $sa.name | default (printf "%s-%s" (include "wsched.fullname" .root) .component) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The gRPC address workers poll: the scheduler's ClusterIP Service. */}}
{{- define "wsched.workersScheduler" -}}
{{- .Values.deployer.workersScheduler | default (printf "%s-scheduler.%s.svc:50051" (include "wsched.fullname" .) .Release.Namespace) -}}
{{- end -}}

{{/* The chart's Secret: what is given as values rather than as existing Secrets. */}}
{{- define "wsched.secretName" -}}
{{- include "wsched.fullname" . -}}
{{- end -}}

{{- define "wsched.needsSecret" -}}
{{- if or (not .Values.database.existingSecret) (not .Values.auth.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* Fails with what to set unless Kafka, the database and the keys are configured. */}}
{{- define "wsched.validate" -}}
{{- $_ := required "kafka.bootstrap is required: the Kafka bootstrap servers, e.g. --set kafka.bootstrap=kafka:9092" .Values.kafka.bootstrap -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) -}}
{{- fail "a database is required: set database.url (a SQLAlchemy URL such as mysql+pymysql://wsched:PASSWORD@tidb:4000/wsched) or database.existingSecret (a Secret holding it under database.existingSecretKey)" -}}
{{- end -}}
{{- if not .Values.auth.existingSecret -}}
{{- if not .Values.auth.operatorKey -}}
{{- fail "auth.operatorKey is required (the operator's API key), or auth.existingSecret naming a Secret with the keys auth.operatorKeyKey and auth.secretKeyKey" -}}
{{- end -}}
{{- if not .Values.auth.secretKey -}}
{{- fail "auth.secretKey is required (a Fernet key encrypting the stored worker tokens; make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'), or auth.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* WSCHED_DATABASE_URL from the given Secret; called with (dict "root" . "secret" NAME). */}}
{{- define "wsched.databaseEnv" -}}
- name: WSCHED_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.database.existingSecret | default .secret }}
      key: {{ ternary .root.Values.database.existingSecretKey "database-url" (not (empty .root.Values.database.existingSecret)) }}
{{- end -}}

{{/* What every process is configured with. */}}
{{- define "wsched.commonEnv" -}}
- name: WSCHED_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
{{ include "wsched.databaseEnv" (dict "root" . "secret" (include "wsched.secretName" .)) }}
- name: WSCHED_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: WSCHED_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: WSCHED_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: WSCHED_TRACE_SAMPLE_RATIO
  value: {{ $.Values.tracing.sampleRatio | quote }}
{{- end }}
# The root filesystem is read-only; /tmp is an emptyDir.
- name: WSCHED_DATA_DIR
  value: /tmp/wsched
{{- end -}}

{{/* Called with (dict "root" . "component" "api"). */}}
{{- define "wsched.podAnnotations" -}}
{{- $annotations := merge (dict) (index .root.Values .component).podAnnotations .root.Values.podAnnotations -}}
{{- if include "wsched.needsSecret" .root }}
# The processes read the Secret at start: a changed key or URL rolls the pods.
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- with $annotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod-level fields both Deployments share; called with (dict "root" . "component" NAME). */}}
{{- define "wsched.podScheduling" -}}
{{- $c := index .root.Values .component -}}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "wsched.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
{{- end -}}
