{{/* Chart name, overridable. */}}
{{- define "greenjobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource-name prefix: fullnameOverride, else <release>-<name> (or the release when it holds the name). */}}
{{- define "greenjobs.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "greenjobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "greenjobs.labels" -}}
helm.sh/chart: {{ include "greenjobs.chart" .ctx }}
{{ include "greenjobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: greenjobs
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades, so never include the version. */}}
{{- define "greenjobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "greenjobs.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "greenjobs.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "greenjobs.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "greenjobs.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "greenjobs.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "greenjobs.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The image of one component, "operator" or "agent" (the Kueue check runs the operator image):
{repo}/greenjobs-<name>@<image.digests.<name>> when that digest is set (what `make push` wrote),
else {repo}/greenjobs-<name>:<tag>. Call: include "greenjobs.image" (list . "operator").
*/}}
{{- define "greenjobs.image" -}}
{{- $ctx := index . 0 }}{{- $name := index . 1 }}
{{- $digest := get ($ctx.Values.image.digests | default dict) $name }}
{{- if $digest }}
{{- printf "%s/greenjobs-%s@%s" $ctx.Values.image.repo $name $digest }}
{{- else }}
{{- printf "%s/greenjobs-%s:%s" $ctx.Values.image.repo $name (include "greenjobs.tag" $ctx) }}
{{- end }}
{{- end }}

{{/* Peering is on when asked for, and always with more than one replica. Renders "true" or "". */}}
{{- define "greenjobs.leaderElection.enabled" -}}
{{- if or .Values.operator.leaderElection.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{- define "greenjobs.lease.name" -}}
{{- default (printf "%s-operator" (include "greenjobs.fullname" .)) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/*
The operator's config.yaml (greenjobs.controller.config.OperatorConfig). Chart-only provider fields
become what the operator reads, so the ConfigMap holds file paths and never a secret:
  <field>Secret: {name, key} -> <field>File: /var/run/secrets/greenjobs/<provider dir>/<field>
  configMap: <name>           -> path: /var/run/greenjobs/forecasts/<name>
*/}}
{{- define "greenjobs.operator.config" -}}
{{- $providers := list }}
{{- range $p := .Values.operator.config.providers }}
{{- $out := dict }}
{{- range $k, $v := $p }}
{{- if has $k (list "apiKeySecret" "usernameSecret" "passwordSecret") }}
{{- $field := trimSuffix "Secret" $k }}
{{- $_ := set $out (printf "%sFile" $field) (printf "/var/run/secrets/greenjobs/%s/%s" (include "greenjobs.providerDir" $p) $field) }}
{{- else if eq $k "configMap" }}
{{- $_ := set $out "path" (printf "/var/run/greenjobs/forecasts/%s" $v) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- $providers = append $providers $out }}
{{- end }}
{{- $cfg := omit .Values.operator.config "providers" "defaultZone" }}
{{- $_ := set $cfg "providers" $providers }}
{{- with .Values.operator.config.defaultZone }}
{{- $_ := set $cfg "defaultZone" . }}
{{- end }}
{{- $_ := set $cfg "metricsPort" .Values.operator.metricsPort }}
{{- toYaml $cfg }}
{{- end }}

{{/* Folder of a provider's mounted credentials: its name, else its type. */}}
{{- define "greenjobs.providerDir" -}}
{{- default .type .name }}
{{- end }}

{{/* Fail early on two providers that would mount credentials into the same folder. */}}
{{- define "greenjobs.operator.checkProviders" -}}
{{- $seen := dict }}
{{- range $p := .Values.operator.config.providers }}
{{- if include "greenjobs.hasSecrets" $p }}
{{- $dir := include "greenjobs.providerDir" $p }}
{{- if hasKey $seen $dir }}
{{- fail (printf "operator.config.providers: two providers named %q use Secrets; their mount paths would clash (give each a distinct name)" $dir) }}
{{- end }}
{{- $_ := set $seen $dir true }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when a provider entry references at least one Secret. */}}
{{- define "greenjobs.hasSecrets" -}}
{{- range $k, $v := . }}{{ if has $k (list "apiKeySecret" "usernameSecret" "passwordSecret") }}true{{ end }}{{ end }}
{{- end }}

{{/* Namespace of the node agent: agent.namespace, else the release's (docs/security.md, Pod Security). */}}
{{- define "greenjobs.agent.namespace" -}}
{{- default .Release.Namespace .Values.agent.namespace }}
{{- end }}

{{/* Usernames the API server gives the two ServiceAccounts' tokens (admission policies key on them). */}}
{{- define "greenjobs.operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "greenjobs.operator.serviceAccountName" .) }}
{{- end }}

{{- define "greenjobs.agent.username" -}}
{{- printf "system:serviceaccount:%s:%s" (include "greenjobs.agent.namespace" .) (include "greenjobs.agent.serviceAccountName" .) }}
{{- end }}

{{/* The forecast providers' Secret and ConfigMap mounts (operator and kueue-check containers). */}}
{{- define "greenjobs.providerMounts" -}}
{{- range $i, $p := .Values.operator.config.providers }}
            {{- if include "greenjobs.hasSecrets" $p }}
            - name: secrets-{{ $i }}
              mountPath: /var/run/secrets/greenjobs/{{ include "greenjobs.providerDir" $p }}
              readOnly: true
            {{- end }}
            {{- if $p.configMap }}
            - name: forecasts-{{ $i }}
              mountPath: /var/run/greenjobs/forecasts/{{ $p.configMap }}
              readOnly: true
            {{- end }}
            {{- end }}
{{- end }}

{{/* The volumes behind greenjobs.providerMounts. */}}
{{- define "greenjobs.providerVolumes" -}}
{{- range $i, $p := .Values.operator.config.providers }}
        {{- if include "greenjobs.hasSecrets" $p }}
        # Credentials of provider {{ include "greenjobs.providerDir" $p }}, from existing Secrets, as files.
        - name: secrets-{{ $i }}
          projected:
            defaultMode: 0440
            sources:
              {{- range $k, $v := $p }}
              {{- if has $k (list "apiKeySecret" "usernameSecret" "passwordSecret") }}
              - secret:
                  name: {{ required (printf "%s.%s.name is required" $p.type $k) $v.name }}
                  items:
                    - key: {{ required (printf "%s.%s.key is required" $p.type $k) $v.key }}
                      path: {{ trimSuffix "Secret" $k }}
              {{- end }}
              {{- end }}
        {{- end }}
        {{- if $p.configMap }}
        - name: forecasts-{{ $i }}
          configMap:
            name: {{ $p.configMap }}
        {{- end }}
        {{- end }}
{{- end }}
