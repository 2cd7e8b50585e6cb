//! Building the SDK client: the HTTP stack (with or without certificate
//! checks), the credentials, and the region.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, SharedCredentialsProvider, SharedHttpClient,
};
use aws_sdk_s3::Client;

use super::retry::{innermost, Failure, Op, Retry, CREDENTIALS_HINT};
use super::{tls, Operation, S3Storage, RESPONSE_TIMEOUT};
use crate::error::{Error, Result};

impl S3Storage {
    fn sdk_config(
        &self,
        http: SharedHttpClient,
        region: String,
        credentials: SharedCredentialsProvider,
    ) -> aws_sdk_s3::config::Builder {
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            )
            .force_path_style(self.config.path_style());
        if let Some(endpoint) = &self.config.endpoint {
            // S3-compatible stores vary in their support of the newer
            // flexible checksums (aws-chunked uploads with trailers): ask
            // for them only where the operation requires one. Segments
            // carry their own checksums, verified on every restore.
            b = b
                .endpoint_url(endpoint)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        b
    }

    pub(super) async fn build_client(&self) -> Result<Client> {
        let http = if self.config.skip_verify {
            tls::insecure_http_client()
        } else {
            use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https()
        };
        let provisional = self
            .config
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".into());
        let credentials = self.credentials(http.clone(), &provisional).await?;
        let region = match &self.config.region {
            Some(r) => r.clone(),
            // An S3-compatible store rarely cares; Litestream's default.
            None if self.config.endpoint.is_some() => "us-east-1".into(),
            None => {
                let probe = Client::from_conf(
                    self.sdk_config(http.clone(), "us-east-1".into(), credentials.clone())
                        .build(),
                );
                self.lookup_region(&probe).await?
            }
        };
        Ok(Client::from_conf(
            self.sdk_config(http, region, credentials).build(),
        ))
    }

    /// Keys from the config, then from LITESTREAM_ACCESS_KEY_ID and
    /// LITESTREAM_SECRET_ACCESS_KEY, then the AWS default chain.
    async fn credentials(
        &self,
        http: SharedHttpClient,
        region: &str,
    ) -> Result<SharedCredentialsProvider> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (id, secret) = match (&self.config.access_key_id, &self.config.secret_access_key) {
            (None, None) => (
                env("LITESTREAM_ACCESS_KEY_ID"),
                env("LITESTREAM_SECRET_ACCESS_KEY"),
            ),
            (id, secret) => (id.clone(), secret.clone()),
        };
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(SharedCredentialsProvider::new(Credentials::new(
                id,
                secret,
                None,
                None,
                "litestream",
            ))),
            (None, None) => {
                let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .configure(
                        aws_config::provider_config::ProviderConfig::default()
                            .with_http_client(http)
                            .with_region(Some(Region::new(region.to_string()))),
                    )
                    .build()
                    .await;
                // Ask once now, so that "no credentials anywhere" is one
                // clear error instead of a failure retried on every request.
                if let Err(e) = chain.provide_credentials().await {
                    let why = innermost(&e);
                    return Err(Error::Remote {
                        action: "find credentials for",
                        object: self.config.describe(),
                        reason: if why.starts_with("no credentials found") {
                            "no credentials found: none in the config, the LITESTREAM_* or AWS_* variables, the AWS profile or the instance role".into()
                        } else {
                            why
                        },
                        hint: Some(CREDENTIALS_HINT),
                    });
                }
                Ok(SharedCredentialsProvider::new(chain))
            }
            (Some(_), None) | (None, Some(_)) => Err(Error::Usage(format!(
                "{}: an access key id needs its secret access key and the other way round (LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY)",
                self.config.describe()
            ))),
        }
    }

    /// Ask S3 where the bucket lives: HeadBucket answers with the region
    /// in `x-amz-bucket-region`, even when it refuses the request.
    async fn lookup_region(&self, probe: &Client) -> Result<String> {
        let op = Op {
            action: "find the region of",
            object: format!("s3://{}", self.config.bucket),
        };
        let bucket = &self.config.bucket;
        let header = |raw: Option<&HttpResponse>| {
            raw.and_then(|r| r.headers().get("x-amz-bucket-region"))
                .map(str::to_string)
        };
        let mut retry = Retry::new(self.config.retry_deadline);
        loop {
            self.count(Operation::Head);
            let sent =
                tokio::time::timeout(RESPONSE_TIMEOUT, probe.head_bucket().bucket(bucket).send())
                    .await;
            let err = match sent {
                Err(_) => {
                    retry.wait(&op, "no response within 30s".into()).await?;
                    continue;
                }
                Ok(Ok(out)) => return Ok(out.bucket_region().unwrap_or("us-east-1").to_string()),
                Ok(Err(e)) => e,
            };
            if let Some(region) = header(err.raw_response()) {
                return Ok(region);
            }
            match self.classify(&op, err) {
                Failure::Retry(why) => retry.wait(&op, why).await?,
                Failure::Fatal(Error::NotFound(_)) => return Err(self.missing_bucket(&op)),
                Failure::Fatal(e) => return Err(e),
            }
        }
    }
}
