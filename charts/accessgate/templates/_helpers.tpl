{{- define "accessgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "accessgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "accessgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "accessgate.serviceAccountName" -}}
{{- default (include "accessgate.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Cluster-scoped objects (and the RoleBindings in watched namespaces): the fullname qualified
by the release namespace, so releases of one name in two namespaces never share one. Neither
part can hold a `:`, which RBAC names may. */}}
{{- define "accessgate.clusterName" -}}
{{- printf "%s:%s" .Release.Namespace (include "accessgate.fullname" .) -}}
{{- end -}}

{{/* The leader-election Lease: passed to the binary and the only Lease RBAC lets it touch. */}}
{{- define "accessgate.leaseName" -}}
{{- printf "%s-leader" (include "accessgate.fullname" .) -}}
{{- end -}}

{{/* The host ledger ConfigMap: which namespace holds which host for host routing. */}}
{{- define "accessgate.hostLedgerName" -}}
{{- printf "%s-hosts" (include "accessgate.fullname" .) -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is set. Call with an image values map. */}}
{{- define "accessgate.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .appVersion) -}}
{{- end -}}
{{- end -}}

{{/* Replicas that run at the least: what a PodDisruptionBudget can count on. */}}
{{- define "accessgate.minReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.minReplicas -}}
{{- else -}}
{{- .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{/* The rules the controller needs: one file shared with the controller tests. */}}
{{- define "accessgate.rules" -}}
{{- .Files.Get "files/rbac-rules.yaml" | fromYaml | toJson -}}
{{- end -}}

{{/* The PromQL selector of this release's scrape target (job = Service name under a ServiceMonitor). */}}
{{- define "accessgate.promSelector" -}}
job="{{ include "accessgate.fullname" . }}",namespace="{{ .Release.Namespace }}"
{{- end -}}

{{/* The `helm test` Pod's identity: never the Deployment's selector labels. */}}
{{- define "accessgate.testLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end -}}

{{/* The decision log's key Secret: `decisionLog.key.existingSecret`, or the one the chart creates. */}}
{{- define "accessgate.decisionLogKeySecret" -}}
{{- .Values.decisionLog.key.existingSecret | default (printf "%s-decision-log-key" (include "accessgate.fullname" .)) -}}
{{- end -}}

{{/* Where the decision log's key Secret is mounted (read-only); the key is the file `key`. */}}
{{- define "accessgate.decisionLogKeyDir" -}}
/var/run/accessgate/decision-log
{{- end -}}

{{/* The upstream assertion's key Secret: the user's, or the one the chart creates. */}}
{{- define "accessgate.assertionKeysSecret" -}}
{{- .Values.upstreamAssertion.keys.existingSecret | default (printf "%s-assertion-keys" (include "accessgate.fullname" .)) -}}
{{- end -}}

{{/* Where the assertion key Secret is mounted (read-only), as the key directory. */}}
{{- define "accessgate.assertionKeysDir" -}}
/var/run/accessgate/assertion-keys
{{- end -}}

{{/* The assertions' issuer: the value, or the auth Service's URL. */}}
{{- define "accessgate.assertionIssuer" -}}
{{- if .Values.upstreamAssertion.issuer -}}
{{- .Values.upstreamAssertion.issuer -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s" (include "accessgate.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- if ne (int .Values.service.port) 80 }}:{{ .Values.service.port }}{{ end -}}
{{- end -}}
{{- end -}}
