{{- define "lipsync-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lipsync-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lipsync-operator.labels" -}}
app.kubernetes.io/name: {{ include "lipsync-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lipsync-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lipsync-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lipsync-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lipsync-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lipsync-operator.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (default .Chart.AppVersion .Values.runtime.image.tag) -}}
{{- end -}}

{{/*
RBAC rules, exactly what the operator calls (no wildcards); docs/operator.md, "Security and
multi-tenancy", says why each is needed. Namespaced rules: in cluster-wide mode a ClusterRole
grants them everywhere; with watchNamespaces, a Role grants them in each watched namespace only.
*/}}
{{- define "lipsync-operator.namespacedRules" -}}
# The resource it reconciles; patch carries kopf's bookkeeping annotations.
- apiGroups: [lipsync.dev]
  resources: [lipsyncmodels]
  verbs: [get, list, watch, patch]
- apiGroups: [lipsync.dev]
  resources: [lipsyncmodels/status]
  verbs: [get, patch]
# Children, applied server-side (create + patch) and removed when no longer desired.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
{{- if eq .Values.autoscaling.scaler "keda" }}
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch]
# Status changes and failures, posted on the model.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Cluster-scoped reads, in both modes. */}}
{{- define "lipsync-operator.clusterRules" -}}
# GPU nodes: products, counts, readiness.
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
# Pods: build pods' termination messages, and the GPUs other pods hold on GPU nodes (read only).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Kopf: notices the CRD being installed or changed.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end -}}

