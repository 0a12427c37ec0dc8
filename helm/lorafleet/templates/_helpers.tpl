{{/*
Names. Kubernetes object names are DNS labels: at most 63 characters.
*/}}
{{- define "lorafleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorafleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lorafleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorafleet.gateway.fullname" -}}
{{- printf "%s-gateway" (include "lorafleet.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Engine pool objects: call with (dict "root" $ "engine" $engine). */}}
{{- define "lorafleet.engine.fullname" -}}
{{- printf "%s-engine-%s" (include "lorafleet.fullname" .root) .engine.name | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorafleet.engine.headlessName" -}}
{{- printf "%s-pods" (include "lorafleet.engine.fullname" .) -}}
{{- end -}}

{{- define "lorafleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lorafleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Labels. Selector labels never change after install (Deployment selectors are immutable).
*/}}
{{- define "lorafleet.labels" -}}
helm.sh/chart: {{ include "lorafleet.chart" . }}
app.kubernetes.io/name: {{ include "lorafleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lorafleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "lorafleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lorafleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lorafleet.gateway.selectorLabels" -}}
{{ include "lorafleet.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Every engine pod of the release (the NetworkPolicy target): call with the root context. */}}
{{- define "lorafleet.engines.selectorLabels" -}}
{{ include "lorafleet.selectorLabels" . }}
app.kubernetes.io/component: engine
{{- end -}}

{{/* One pool's labels and selector labels: call with (dict "root" $ "engine" $engine). */}}
{{- define "lorafleet.engine.labels" -}}
{{ include "lorafleet.labels" .root }}
app.kubernetes.io/component: engine
lorafleet.io/pool: {{ .engine.name }}
{{- end -}}

{{- define "lorafleet.engine.selectorLabels" -}}
{{ include "lorafleet.engines.selectorLabels" .root }}
lorafleet.io/pool: {{ .engine.name }}
{{- end -}}

{{/*
One engine pool's settings: engineDefaults with the entry's keys laid over it. Maps one level
deep (image, startupProbe, keda, ...) merge key by key; anything deeper is replaced whole.
Written out by hand because sprig's merge treats false and 0 as "unset". Returns YAML: use
`include "lorafleet.engineConfig" (dict "root" $ "engine" $entry) | fromYaml`.
*/}}
{{- define "lorafleet.engineConfig" -}}
{{- $out := dict -}}
{{- range $key, $default := .root.Values.engineDefaults -}}
{{- if not (hasKey $.engine $key) -}}
{{- $_ := set $out $key $default -}}
{{- else if and (kindIs "map" $default) (kindIs "map" (get $.engine $key)) -}}
{{- $nested := dict -}}
{{- range $k, $v := $default }}{{ $_ := set $nested $k $v }}{{ end -}}
{{- range $k, $v := (get $.engine $key) }}{{ $_ := set $nested $k $v }}{{ end -}}
{{- $_ := set $out $key $nested -}}
{{- else -}}
{{- $_ := set $out $key (get $.engine $key) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := .engine -}}
{{- if not (hasKey $out $key) }}{{ $_ := set $out $key $value }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Refuse values that would render but not work. Included once from the gateway Deployment.
*/}}
{{- define "lorafleet.validate" -}}
{{- $names := list -}}
{{- $served := list -}}
{{- range .Values.engines -}}
{{- $e := include "lorafleet.engineConfig" (dict "root" $ "engine" .) | fromYaml -}}
{{- if has $e.name $names -}}
{{- fail (printf "engines: the pool name %q is used twice" $e.name) -}}
{{- end -}}
{{- $names = append $names $e.name -}}
{{- if has $e.servedModelName $served -}}
{{- fail (printf "engines[%s]: servedModelName %q is used by another pool: one pool per base model" $e.name $e.servedModelName) -}}
{{- end -}}
{{- $served = append $served $e.servedModelName -}}
{{- $parallel := mul (int $e.tensorParallelSize) (int $e.pipelineParallelSize) -}}
{{- if and (gt (int $e.gpus) 0) (ne (int $e.gpus) (int $parallel)) -}}
{{- fail (printf "engines[%s]: gpus (%d) must equal tensorParallelSize x pipelineParallelSize (%d); a pod cannot span nodes, see docs/deploy.md for multi-node" $e.name (int $e.gpus) (int $parallel)) -}}
{{- end -}}
{{- if and (gt (int $e.maxCpuLoras) 0) (lt (int $e.maxCpuLoras) (int $e.maxLoras)) -}}
{{- fail (printf "engines[%s]: maxCpuLoras (%d) must be 0 or at least maxLoras (%d)" $e.name (int $e.maxCpuLoras) (int $e.maxLoras)) -}}
{{- end -}}
{{- if and (hasPrefix "/" $e.model) (not (hasPrefix "/models/" $e.model)) -}}
{{- fail (printf "engines[%s]: model %q: a local path must lie in the model cache volume, under /models/" $e.name $e.model) -}}
{{- end -}}
{{- if and (hasPrefix "/models/" $e.model) (not $e.modelCache.enabled) -}}
{{- fail (printf "engines[%s]: model %q is a path in the model cache, but modelCache.enabled is false (the pod would see an empty /models)" $e.name $e.model) -}}
{{- end -}}
{{- $config := include "lorafleet.engine.configModel" $e -}}
{{- if and (hasPrefix "/models/" $config) (not $e.modelCache.existingClaim) (not (or (has "ReadWriteMany" $e.modelCache.accessModes) (has "ReadOnlyMany" $e.modelCache.accessModes))) -}}
{{- fail (printf "engines[%s]: model %q is a path in the model cache: the gateway mounts that cache too (to read config.json), so it needs ReadWriteMany or ReadOnlyMany (or an existingClaim that allows it)" $e.name $config) -}}
{{- end -}}
{{- if eq $e.kind "llama.cpp" -}}
{{- if not (and (hasPrefix "/models/" $e.model) (hasSuffix ".gguf" $e.model)) -}}
{{- fail (printf "engines[%s]: a llama.cpp pool serves a GGUF file from its model cache: model must be a /models/...gguf path, not %q" $e.name $e.model) -}}
{{- end -}}
{{- if not $e.llamaCpp.sourceModel -}}
{{- fail (printf "engines[%s]: llamaCpp.sourceModel is required: the model the GGUF file was exported from (the gateway reads its config.json)" $e.name) -}}
{{- end -}}
{{- if and (hasPrefix "/" $e.llamaCpp.sourceModel) (not (hasPrefix "/models/" $e.llamaCpp.sourceModel)) -}}
{{- fail (printf "engines[%s]: llamaCpp.sourceModel %q: a local path must lie in the model cache volume, under /models/" $e.name $e.llamaCpp.sourceModel) -}}
{{- end -}}
{{- if $e.keda.enabled -}}
{{- fail (printf "engines[%s]: keda scales on vLLM's queue metric; a llama.cpp pool has none: set replicas instead" $e.name) -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int $e.gpus) 0) $e.cpuLoraOps -}}
{{- fail (printf "engines[%s]: cpuLoraOps is for CPU pools (gpus: 0)" $e.name) -}}
{{- end -}}
{{- if lt (mul (int $e.startupProbe.periodSeconds) (int $e.startupProbe.failureThreshold)) 600 -}}
{{- fail (printf "engines[%s]: the startupProbe budget (periodSeconds x failureThreshold) must be at least 600 s: vLLM loads weights before /health answers" $e.name) -}}
{{- end -}}
{{- end -}}
{{- range .Values.gateway.externalModels -}}
{{- if has .name $served -}}
{{- fail (printf "gateway.externalModels: the base model %q is served twice" .name) -}}
{{- end -}}
{{- $served = append $served .name -}}
{{- end -}}
{{- if not $served -}}
{{- fail "no engines: list at least one pool in engines or a model in gateway.externalModels" -}}
{{- end -}}
{{- range .Values.gateway.ingress.paths -}}
{{- if and (not $.Values.gateway.ingress.exposeAdminRoutes) (or (eq . "/") (hasPrefix "/v1/adapters" .) (hasPrefix "/v1/keys" .) (hasPrefix "/v1/usage" .) (hasPrefix "/metrics" .) (hasPrefix "/docs" .) (hasPrefix "/openapi" .)) -}}
{{- fail (printf "gateway.ingress.paths: %q would publish admin or metrics routes; list inference paths only, or set gateway.ingress.exposeAdminRoutes" .) -}}
{{- end -}}
{{- end -}}
{{- if not (or .Values.database.existingSecret .Values.database.url) -}}
{{- fail "database: set database.existingSecret (or database.url): the adapter registry needs a database" -}}
{{- end -}}
{{- if and (hasPrefix "sqlite" .Values.database.url) (or .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.replicas) 1)) -}}
{{- fail "database: a SQLite file lives in one pod; several gateway replicas need PostgreSQL" -}}
{{- end -}}
{{- end -}}

{{/*
Where the gateway reads a pool's config.json (to validate adapters): a Hugging Face id as is;
a path in the pool's model cache (/models/...) under the cache's read-only mount in the gateway.
Call with (dict "root" $ "engine" $e) where $e is the merged pool config.
*/}}
{{- define "lorafleet.gatewayModelSource" -}}
{{- $config := include "lorafleet.engine.configModel" .engine -}}
{{- if hasPrefix "/models/" $config -}}
{{- printf "/pool-models/%s/%s" .engine.name (trimPrefix "/models/" $config) -}}
{{- else -}}
{{- $config -}}
{{- end -}}
{{- end -}}

{{/*
The model whose config.json the gateway reads for a pool (merged pool config): what vLLM
serves, or for a llama.cpp pool the model its GGUF file was exported from.
*/}}
{{- define "lorafleet.engine.configModel" -}}
{{- if eq .kind "llama.cpp" }}{{ .llamaCpp.sourceModel }}{{ else }}{{ .model }}{{ end -}}
{{- end -}}

{{/*
The base guard for a pool: vLLM's own CPU LoRA ops give base rows of mixed batches an
adapter (docs/design/base-guard.md), so CPU pools without lorafleet's engine plugin route base
requests through an all-zero adapter; GPU kernels and the plugin need none.
*/}}
{{- define "lorafleet.baseGuard" -}}
{{- if and (eq .kind "vllm") (eq (int .gpus) 0) (not .cpuLoraOps) }}on{{ else }}off{{ end -}}
{{- end -}}

{{/* LORAFLEET_MODELS: one entry per base model, as JSON (server/settings.py ModelSpec). */}}
{{- define "lorafleet.gatewayModels" -}}
{{- $models := list -}}
{{- range .Values.engines -}}
{{- $ctx := dict "root" $ "engine" . -}}
{{- $e := include "lorafleet.engineConfig" $ctx | fromYaml -}}
{{- $headless := include "lorafleet.engine.headlessName" $ctx -}}
{{- $models = append $models (dict
      "name" $e.servedModelName
      "source" (include "lorafleet.gatewayModelSource" (dict "root" $ "engine" $e))
      "engine_discovery" (list (printf "%s.%s.svc.%s:8000" $headless $.Release.Namespace $.Values.clusterDomain))
      "engine_kind" $e.kind
      "max_lora_rank" (int $e.maxLoraRank)
      "base_guard" (include "lorafleet.baseGuard" $e)) -}}
{{- end -}}
{{- range .Values.gateway.externalModels -}}
{{- $models = append $models (dict "name" .name "source" (default .name .source) "engine_urls" .engineUrls "engine_kind" (default "vllm" .engineKind)) -}}
{{- end -}}
{{- toJson $models -}}
{{- end -}}

{{/* The adapter store: on the shared adapter volume, the same path in every pod. */}}
{{- define "lorafleet.adapterStore.path" -}}
{{- printf "%s/store" (trimSuffix "/" .Values.adapterStore.mountPath) -}}
{{- end -}}

{{/*
A pool's engine pods, from `kubectl rollout` to ready: the startupProbe budget. Rollouts must
not be reported failed before it ends (progressDeadlineSeconds).
*/}}
{{- define "lorafleet.engine.startupBudget" -}}
{{- mul (int .startupProbe.periodSeconds) (int .startupProbe.failureThreshold) -}}
{{- end -}}

{{/* The longest startup budget of all pools: the gateway is not ready before its engines. */}}
{{- define "lorafleet.engines.maxStartupBudget" -}}
{{- $max := 0 -}}
{{- range .Values.engines -}}
{{- $e := include "lorafleet.engineConfig" (dict "root" $ "engine" .) | fromYaml -}}
{{- $budget := int (include "lorafleet.engine.startupBudget" $e) -}}
{{- if gt $budget $max }}{{ $max = $budget }}{{ end -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{- define "lorafleet.database.secretName" -}}
{{- default (printf "%s-database" (include "lorafleet.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "lorafleet.database.secretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end -}}
{{- end -}}

{{- define "lorafleet.redis.secretName" -}}
{{- default (printf "%s-redis" (include "lorafleet.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "lorafleet.redis.secretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end -}}
{{- end -}}

{{/* The gateway's shared rate-limit store, when one is configured: a list of EnvVar. */}}
{{- define "lorafleet.redisEnv" -}}
{{- if or .Values.redis.existingSecret .Values.redis.url }}
- name: LORAFLEET_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.redis.secretName" . }}
      key: {{ include "lorafleet.redis.secretKey" . }}
{{- end }}
{{- end -}}

{{- define "lorafleet.auth.secretName" -}}
{{- default (printf "%s-auth" (include "lorafleet.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "lorafleet.gateway.image" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (default .Chart.AppVersion .Values.gateway.image.tag) -}}
{{- end -}}

{{- define "lorafleet.adapterStore.claimName" -}}
{{- default (printf "%s-adapters" (include "lorafleet.fullname" .)) .Values.adapterStore.persistence.existingClaim -}}
{{- end -}}

{{/* Secret-backed settings shared by the gateway and the trainer: a list of EnvVar. */}}
{{- define "lorafleet.secretEnv" -}}
- name: LORAFLEET_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.database.secretName" . }}
      key: {{ include "lorafleet.database.secretKey" . }}
- name: LORAFLEET_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.auth.secretName" . }}
      key: {{ .Values.auth.adminKeyKey }}
- name: LORAFLEET_KEY_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.auth.secretName" . }}
      key: {{ .Values.auth.keySecretKey }}
{{- end -}}

{{- define "lorafleet.hfTokenEnv" -}}
{{- if .Values.huggingface.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.huggingface.existingSecret }}
      key: {{ .Values.huggingface.existingSecretKey }}
{{- end }}
{{- end -}}

{{- define "lorafleet.s3Env" -}}
{{- if .Values.adapterStore.s3.enabled }}
{{- with .Values.adapterStore.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.adapterStore.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.adapterStore.s3.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}
{{- end -}}
