{{- define "budgetops.labels" -}}
app.kubernetes.io/name: budgetops
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* What the Deployment's pods carry, and what the Service, PDB and policies select. */}}
{{- define "budgetops.selectorLabels" -}}
app.kubernetes.io/name: budgetops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The name of the Deployment, Service, webhook configuration and cluster RBAC. */}}
{{- define "budgetops.fullname" -}}
{{ .Release.Name }}-budgetops
{{- end -}}

{{/* The identity admission never charges: the operator's own ServiceAccount. */}}
{{- define "budgetops.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ .Values.serviceAccount.name }}
{{- end -}}

{{/* The names the webhook's serving certificate is valid for (selfSigned and certManager). */}}
{{- define "budgetops.dnsNames" -}}
{{- $service := include "budgetops.fullname" . -}}
{{- $namespace := .Release.Namespace -}}
{{- list $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc" $service $namespace) (printf "%s.%s.svc.%s" $service $namespace .Values.clusterDomain) | toJson -}}
{{- end -}}

{{/* The cert-manager Certificate of the serving certificate (certManager mode). */}}
{{- define "budgetops.certificateName" -}}
{{ include "budgetops.fullname" . }}-webhook
{{- end -}}
