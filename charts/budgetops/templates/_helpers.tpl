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

{{/* More names the serving certificate is valid for: webhook.tls.extraNames, and the host of
webhook.url (which the API server checks the certificate against), each once. */}}
{{- define "budgetops.extraNames" -}}
{{- $names := .Values.webhook.tls.extraNames | default list -}}
{{- with .Values.webhook.url -}}
{{- $names = append $names (urlParse .).hostname -}}
{{- end -}}
{{- $names | uniq | toJson -}}
{{- end -}}

{{/* Which of those are IP addresses (an IP SAN), not DNS names. */}}
{{- define "budgetops.isIP" -}}
{{- if or (regexMatch "^[0-9]+(\\.[0-9]+){3}$" .) (contains ":" .) }}true{{ end -}}
{{- end -}}
