//! The OpenAI-compatible chat-completions client and its retry policy:
//!
//! | outcome | what happens |
//! |---|---|
//! | 429 rate limit | wait `retry-after-ms` / `retry-after` / an exhausted `x-ratelimit-*` quota's reset (jittered up, never sooner) or the backoff, `max_retries` times; then, or for a wait beyond `max_inline_wait`, `RetryLater` |
//! | 429 quota / billing | `Permanent` (kind `Quota`), never retried |
//! | 408, 409, 5xx, 200 with `error`, connect errors, timeouts | jittered exponential backoff, `max_retries` times, then `Transient` |
//! | 401/403, other 4xx | `Permanent` |
//! | content not valid for the schema | re-asked `malformed_retries` times, then `Malformed` with a snippet |
//! | `finish_reason=length` | prompt budget halved (down to the floor), then `Permanent` (kind `Truncated`) |
//! | refusal, `content_filter` | `Refused` |
//! | unknown `finish_reason` | accepted if the content is valid |
//!
//! Each kind of retry has its own bound, so one call makes at most
//! `(max_retries + 1) + malformed_retries + log2(budget / min_budget) + 1` requests.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use insights_core::config::INSIGHTS_LLM_TIMEOUT_MS;
use insights_core::profile::{OutputProfile, PromptInput, TokenLimitParameter};
use insights_core::{LeadKey, Profile, Prompt};
use insights_pg::Jitter;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::config::LlmConfig;
use crate::defaults;
use crate::error::{LlmError, LlmErrorKind};
use crate::retry_after::parse_retry_after;
use crate::wire::{ChatMessageRef, ChatRequestRef, ChatResponse, ErrorEnvelope, Usage};

/// A validated insight and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmInsight {
    /// The insight document, valid against the profile's schema.
    pub document: serde_json::Value,
    /// The model the server says answered (falls back to the configured one).
    pub model: String,
    /// Tokens billed across every attempt of this call (failed attempts cost too).
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// `x-request-id` of the successful response, else the response `id`.
    pub request_id: Option<String>,
    /// HTTP requests made, including the successful one.
    pub attempts: u32,
    /// Messages of the conversation the successful prompt carried (newest kept).
    pub included_messages: usize,
}

/// Cheap to clone; share one per process so connections are pooled.
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    cfg: LlmConfig,
    /// Parsed once: reqwest would otherwise parse the string on every request.
    endpoint: reqwest::Url,
    /// The prompt templates, the insight's schema and the request parameters. `cfg` holds the
    /// model, token limit and prompt budget already resolved against it.
    profile: Arc<Profile>,
    /// `None` when the profile turns structured outputs off.
    response_format: Option<serde_json::Value>,
    /// How a server's hint is spread: never sooner than asked, so callers told the same wait
    /// do not return together.
    hint_jitter: Jitter,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

/// The result of one HTTP request, before the retry policy decides.
enum Attempt {
    Done {
        document: serde_json::Value,
        model: Option<String>,
        usage: Usage,
        request_id: Option<String>,
    },
    Transient {
        reason: String,
        status: Option<u16>,
        hint: Option<Duration>,
    },
    Permanent {
        kind: LlmErrorKind,
        status: Option<u16>,
        reason: String,
    },
    Malformed {
        reason: String,
        snippet: String,
        usage: Usage,
    },
    Length {
        usage: Usage,
    },
    Refused {
        reason: String,
    },
}

/// The state of one `generate_insight` call across its requests: each kind of retry spends
/// its own bound.
struct Call<'a> {
    input: &'a PromptInput,
    /// Every message rendered once; shrinking the prompt re-renders only around them.
    lines: Vec<String>,
    profile: &'a Profile,
    lead_id: &'a LeadKey,
    min_budget: usize,
    budget: usize,
    prompt: Prompt,
    transient_retries: u32,
    malformed_left: u32,
    attempts: u32,
    billed: Usage,
}

impl<'a> Call<'a> {
    fn new(
        lead_id: &'a LeadKey,
        input: &'a PromptInput,
        profile: &'a Profile,
        cfg: &LlmConfig,
    ) -> Result<Self, LlmError> {
        let templates = &profile.prompt.templates;
        let lines = templates.message_lines(input).map_err(prompt_error)?;
        let prompt = templates
            .render_with_lines(input, &lines, cfg.prompt_budget_chars)
            .map_err(prompt_error)?;
        Ok(Self {
            input,
            lines,
            profile,
            lead_id,
            min_budget: cfg.min_prompt_budget_chars.min(cfg.prompt_budget_chars),
            budget: cfg.prompt_budget_chars,
            prompt,
            transient_retries: 0,
            malformed_left: cfg.malformed_retries,
            attempts: 0,
            billed: Usage::default(),
        })
    }

    fn insight(
        &self,
        document: serde_json::Value,
        model: Option<String>,
        request_id: Option<String>,
        cfg: &LlmConfig,
    ) -> LlmInsight {
        LlmInsight {
            document,
            model: model.unwrap_or_else(|| cfg.model.clone()),
            prompt_tokens: to_i64(self.billed.prompt_tokens),
            completion_tokens: to_i64(self.billed.completion_tokens),
            request_id,
            attempts: self.attempts,
            included_messages: self.prompt.included_messages,
        }
    }

    /// Ask again while malformed retries are left.
    fn malformed(&mut self, reason: String, snippet: String, usage: Usage) -> Result<(), LlmError> {
        add_usage(&mut self.billed, usage);
        let (lead_id, attempts) = (self.lead_id, self.attempts);
        if self.malformed_left == 0 {
            tracing::warn!(%lead_id, attempts, %reason, "LLM content stayed malformed");
            return Err(LlmError::Malformed {
                reason,
                snippet,
                attempts,
            });
        }
        self.malformed_left -= 1;
        tracing::debug!(%lead_id, attempts, %reason, "LLM content malformed; asking again");
        Ok(())
    }

    /// `finish_reason=length`: halve the prompt budget, or fail at the floor.
    fn shrink_prompt(&mut self, usage: Usage, cfg: &LlmConfig) -> Result<(), LlmError> {
        add_usage(&mut self.billed, usage);
        let (lead_id, attempts, budget) = (self.lead_id, self.attempts, self.budget);
        // Shrink from what the prompt actually used, so a short conversation does not send the
        // same request again after a nominal halving.
        let used = self.prompt.user.chars().count();
        let next_budget = (budget.min(used) / 2).max(self.min_budget);
        let next = self
            .profile
            .prompt
            .templates
            .render_with_lines(self.input, &self.lines, next_budget)
            .map_err(prompt_error)?;
        if next_budget >= budget || next.user.len() >= self.prompt.user.len() {
            tracing::warn!(
                %lead_id,
                attempts,
                budget,
                "LLM output truncated at the smallest prompt"
            );
            return Err(LlmError::Permanent {
                kind: LlmErrorKind::Truncated,
                status: None,
                reason: format!(
                    "finish_reason=length even with a {budget}-character prompt budget ({} messages, max_tokens {})",
                    self.prompt.included_messages, cfg.max_tokens
                ),
            });
        }
        tracing::debug!(
            %lead_id,
            attempts,
            budget,
            next_budget,
            "LLM output truncated; shrinking the prompt"
        );
        self.budget = next_budget;
        self.prompt = next;
        Ok(())
    }
}

impl LlmClient {
    /// A client with the built-in profile: this project's prompt and insight.
    pub fn new(cfg: LlmConfig) -> Result<Self, LlmError> {
        let profile = Profile::builtin().map_err(|e| LlmError::Permanent {
            kind: LlmErrorKind::Config,
            status: None,
            reason: e.to_string(),
        })?;
        Self::with_profile(cfg, Arc::new(profile))
    }

    /// A client that renders the profile's prompt, asks for its schema and validates replies
    /// against it. The profile's model, output token limit and prompt budget, when it sets
    /// them, replace `cfg`'s.
    pub fn with_profile(mut cfg: LlmConfig, profile: Arc<Profile>) -> Result<Self, LlmError> {
        if let Some(model) = &profile.llm.model {
            cfg.model = model.clone();
        }
        if let Some(max_tokens) = profile.llm.max_output_tokens {
            cfg.max_tokens = max_tokens;
        }
        if let Some(budget) = profile.prompt.budget_chars {
            cfg.prompt_budget_chars = budget;
        }
        let config_error = |reason| LlmError::Permanent {
            kind: LlmErrorKind::Config,
            status: None,
            reason,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("insights-worker/", env!("CARGO_PKG_VERSION")))
            .default_headers(cfg.headers().map_err(config_error)?)
            // A redirect to another host would carry the key along unless it sits in
            // `Authorization`; an API endpoint has no reason to redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                config_error(format!("cannot build the HTTP client: {}", error_chain(&e)))
            })?;
        let endpoint = cfg.endpoint_url().map_err(config_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                hint_jitter: Jitter::Up(defaults::RETRY_AFTER_JITTER),
                http,
                cfg,
                endpoint,
                response_format: profile.response_format(),
                profile,
            }),
        })
    }

    /// The configuration in effect (the profile's model, token limit and budget applied).
    pub fn config(&self) -> &LlmConfig {
        &self.inner.cfg
    }

    pub fn profile(&self) -> &Profile {
        &self.inner.profile
    }

    /// Asks the model for the lead's insight, rendering the prompt from `input` with the
    /// profile's templates and applying the retry policy in the module docs. Never holds
    /// anything but an HTTP connection while waiting.
    pub async fn generate_insight(
        &self,
        lead_id: &LeadKey,
        input: &PromptInput,
    ) -> Result<LlmInsight, LlmError> {
        let mut call = Call::new(lead_id, input, &self.inner.profile, &self.inner.cfg)?;
        let user = format!("lead-{lead_id}");
        loop {
            call.attempts += 1;
            let request = self.request(&call.prompt, &user);
            let started = Instant::now();
            match self.attempt(&request).await {
                Attempt::Done {
                    document,
                    model,
                    usage,
                    request_id,
                } => {
                    add_usage(&mut call.billed, usage);
                    tracing::debug!(
                        lead_id = %call.lead_id,
                        attempts = call.attempts,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        prompt_tokens = call.billed.prompt_tokens,
                        completion_tokens = call.billed.completion_tokens,
                        "LLM insight generated"
                    );
                    return Ok(call.insight(document, model, request_id, &self.inner.cfg));
                }
                Attempt::Transient {
                    reason,
                    status,
                    hint,
                } => {
                    let wait = self.transient_wait(&mut call, reason, status, hint)?;
                    tokio::time::sleep(wait).await;
                }
                Attempt::Permanent {
                    kind,
                    status,
                    reason,
                } => {
                    tracing::warn!(lead_id = %call.lead_id, attempts = call.attempts, ?status, %kind, %reason, "LLM request failed permanently");
                    return Err(LlmError::Permanent {
                        kind,
                        status,
                        reason,
                    });
                }
                Attempt::Malformed {
                    reason,
                    snippet,
                    usage,
                } => call.malformed(reason, snippet, usage)?,
                Attempt::Length { usage } => call.shrink_prompt(usage, &self.inner.cfg)?,
                Attempt::Refused { reason } => {
                    tracing::info!(lead_id = %call.lead_id, attempts = call.attempts, %reason, "LLM refused");
                    return Err(LlmError::Refused { reason });
                }
            }
        }
    }

    /// How long to wait before retrying a transient failure, or the error that hands the job
    /// back: a server hint beyond `max_inline_wait`, or the inline retries spent.
    fn transient_wait(
        &self,
        call: &mut Call<'_>,
        reason: String,
        status: Option<u16>,
        hint: Option<Duration>,
    ) -> Result<Duration, LlmError> {
        let cfg = &self.inner.cfg;
        let (lead_id, attempts) = (call.lead_id.clone(), call.attempts);
        if let Some(hint) = hint
            && hint > cfg.max_inline_wait
        {
            tracing::info!(%lead_id, attempts, ?hint, %reason, "LLM asked for a long wait; handing the job back");
            return Err(LlmError::RetryLater {
                after: hint,
                reason,
            });
        }
        if call.transient_retries >= cfg.max_retries {
            tracing::warn!(%lead_id, attempts, ?status, %reason, "LLM transient failures exhausted the inline retries");
            if status == Some(StatusCode::TOO_MANY_REQUESTS.as_u16()) {
                return Err(LlmError::RetryLater {
                    after: hint.unwrap_or(cfg.retry.cap),
                    reason,
                });
            }
            return Err(LlmError::Transient {
                reason,
                status,
                attempts,
                retry_after: hint,
            });
        }
        call.transient_retries += 1;
        let wait = match hint {
            Some(hint) => self.inner.hint_jitter.apply(hint),
            None => cfg.retry.delay(call.transient_retries),
        };
        tracing::debug!(%lead_id, attempts, ?status, ?wait, %reason, "LLM transient failure; retrying");
        Ok(wait)
    }

    fn request<'a>(&'a self, prompt: &'a Prompt, user: &'a str) -> ChatRequestRef<'a> {
        let inner = &*self.inner;
        let limit = inner.cfg.max_tokens;
        let parameter = inner.profile.llm.token_limit_parameter;
        ChatRequestRef {
            model: &inner.cfg.model,
            messages: [
                ChatMessageRef {
                    role: "system",
                    content: &prompt.system,
                },
                ChatMessageRef {
                    role: "user",
                    content: &prompt.user,
                },
            ],
            response_format: inner.response_format.as_ref(),
            max_tokens: (parameter == TokenLimitParameter::MaxTokens).then_some(limit),
            max_completion_tokens: (parameter == TokenLimitParameter::MaxCompletionTokens)
                .then_some(limit),
            temperature: inner.profile.llm.temperature,
            user,
        }
    }

    async fn attempt(&self, request: &ChatRequestRef<'_>) -> Attempt {
        let cfg = &self.inner.cfg;
        let builder = self
            .inner
            .http
            .post(self.inner.endpoint.clone())
            .timeout(cfg.request_timeout)
            .json(request);
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(&e, cfg.request_timeout),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_capped(response, defaults::MAX_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(e) => return transport_failure(&e, cfg.request_timeout),
        };
        if status.is_success() {
            classify_success(&self.inner.profile.output, &headers, &body)
        } else {
            classify_failure(status, &headers, &body)
        }
    }
}

/// The prompt cannot be rendered from what the load returned for this lead.
fn prompt_error(e: insights_core::profile::RenderError) -> LlmError {
    LlmError::Permanent {
        kind: LlmErrorKind::Prompt,
        status: None,
        reason: e.to_string(),
    }
}

/// Reads the body, keeping at most `cap` bytes (an oversized body then fails to parse and is
/// treated as malformed rather than exhausting memory).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= cap {
            break;
        }
    }
    Ok(buf)
}

fn transport_failure(e: &reqwest::Error, request_timeout: Duration) -> Attempt {
    // A connect timeout is both; raising the request timeout would not help it.
    let reason = if e.is_connect() {
        format!("could not connect: {}", error_chain(e))
    } else if e.is_timeout() {
        // Named with its variable: a healthy but slow model times out on every retry until
        // someone raises it.
        format!(
            "request timed out after {request_timeout:?} ({}={}; raise it for slow models)",
            INSIGHTS_LLM_TIMEOUT_MS.name,
            request_timeout.as_millis()
        )
    } else {
        format!("transport error: {}", error_chain(e))
    };
    Attempt::Transient {
        reason,
        status: None,
        hint: None,
    }
}

fn classify_failure(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Attempt {
    let code = status.as_u16();
    let api_error = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error);
    let detail = match &api_error {
        Some(e) => e.describe(),
        None => snippet(&String::from_utf8_lossy(body)),
    };
    let reason = format!("HTTP {code}: {detail}");
    if api_error.as_ref().is_some_and(|e| e.is_quota()) {
        return Attempt::Permanent {
            kind: LlmErrorKind::Quota,
            status: Some(code),
            reason,
        };
    }
    match code {
        408 | 409 | 429 | 500..=599 => Attempt::Transient {
            reason,
            status: Some(code),
            hint: parse_retry_after(headers, SystemTime::now()),
        },
        401 | 403 => Attempt::Permanent {
            kind: LlmErrorKind::Auth,
            status: Some(code),
            reason,
        },
        _ => Attempt::Permanent {
            kind: LlmErrorKind::BadRequest,
            status: Some(code),
            reason,
        },
    }
}

fn classify_success(output: &OutputProfile, headers: &HeaderMap, body: &[u8]) -> Attempt {
    let parsed: ChatResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return Attempt::Malformed {
                reason: format!("response body is not a chat completion: {e}"),
                snippet: snippet(&String::from_utf8_lossy(body)),
                usage: Usage::default(),
            };
        }
    };
    if let Some(error) = &parsed.error {
        // An upstream failure relayed with HTTP 200 (OpenRouter): as good as a 5xx.
        let reason = format!("HTTP 200 with an error object: {}", error.describe());
        if error.is_quota() {
            return Attempt::Permanent {
                kind: LlmErrorKind::Quota,
                status: Some(200),
                reason,
            };
        }
        return Attempt::Transient {
            reason,
            status: None,
            hint: parse_retry_after(headers, SystemTime::now()),
        };
    }
    let usage = parsed.usage.unwrap_or_default();
    let Some(choice) = parsed.choices.into_iter().next() else {
        return Attempt::Malformed {
            reason: "response has no choices".to_owned(),
            snippet: snippet(&String::from_utf8_lossy(body)),
            usage,
        };
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.trim().is_empty()) {
        return Attempt::Refused {
            reason: snippet(&refusal),
        };
    }
    let finish = choice.finish_reason.unwrap_or_default();
    if finish == "content_filter" {
        return Attempt::Refused {
            reason: "stopped by the content filter (finish_reason=content_filter)".to_owned(),
        };
    }
    let raw = choice.message.content.unwrap_or_default();
    match output.accept(&raw) {
        Ok(document) => Attempt::Done {
            document,
            model: parsed.model.filter(|m| !m.is_empty()),
            usage,
            request_id: header_string(headers, "x-request-id").or(parsed.id),
        },
        // Truncated output is incomplete JSON; asking again with the same input would fail the
        // same way, so this is not a malformed retry.
        Err(_) if finish == "length" => Attempt::Length { usage },
        Err(e) => Attempt::Malformed {
            reason: format!("{e} (finish_reason={finish:?})"),
            snippet: snippet(&raw),
            usage,
        },
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The start of `raw`, cut at a character boundary, marked when cut.
fn snippet(raw: &str) -> String {
    let mut chars = raw.chars();
    let mut out: String = chars
        .by_ref()
        .take(defaults::MALFORMED_SNIPPET_CHARS)
        .collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn add_usage(total: &mut Usage, usage: Usage) {
    total.prompt_tokens = total.prompt_tokens.saturating_add(usage.prompt_tokens);
    total.completion_tokens = total
        .completion_tokens
        .saturating_add(usage.completion_tokens);
    total.total_tokens = total.total_tokens.saturating_add(usage.total_tokens);
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// reqwest's `Display` hides the cause ("error sending request"); the chain says what happened.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_is_cut_on_char_boundary() {
        let long = "é".repeat(defaults::MALFORMED_SNIPPET_CHARS + 10);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), defaults::MALFORMED_SNIPPET_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(snippet("short"), "short");
    }

    #[test]
    fn quota_429_is_permanent_and_rate_limit_is_transient() {
        let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(matches!(
            classify_failure(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), quota),
            Attempt::Permanent {
                kind: LlmErrorKind::Quota,
                ..
            }
        ));
        let limited = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert!(matches!(
            classify_failure(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), limited),
            Attempt::Transient {
                status: Some(429),
                ..
            }
        ));
        assert!(matches!(
            classify_failure(StatusCode::NOT_FOUND, &HeaderMap::new(), b"nope"),
            Attempt::Permanent {
                kind: LlmErrorKind::BadRequest,
                ..
            }
        ));
        assert!(matches!(
            classify_failure(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b""),
            Attempt::Permanent {
                kind: LlmErrorKind::Auth,
                ..
            }
        ));
        assert!(matches!(
            classify_failure(StatusCode::CONFLICT, &HeaderMap::new(), b""),
            Attempt::Transient { .. }
        ));
    }
}
