"""The AWS side of the kiam server.

- :mod:`kiam.aws.arn` (pure): role ARN resolution, partitions, regional STS endpoints
- :mod:`kiam.aws.session_names` (pure): ``kiam-<name>`` STS session names
- :mod:`kiam.aws.credentials`: the ``Credentials`` value and the ``CredentialKey``
- :mod:`kiam.aws.errors`: the error tree; botocore's exceptions never leave this package
- :mod:`kiam.aws.retry`: the retry policy for STS calls
- :mod:`kiam.aws.sts`: ``StsGateway``, the only code that talks to STS
- :mod:`kiam.aws.credential_cache`: single-flight cache refreshed ahead of expiry
- :mod:`kiam.aws.base_arn`: ``--role-base-arn-autodetect`` through IMDS
- :mod:`kiam.aws.clock`, :mod:`kiam.aws.metrics`: time source and Prometheus metrics
"""
