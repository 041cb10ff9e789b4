//! The agent's state: the live generation, the document and compiled policy behind it, and the
//! kernel side that enforces it. Applying a document happens here: validate and compile, install
//! (write the idle slot, flip), then the bookkeeping that follows a new generation. The daemon
//! ([`crate::daemon`]) drives it; reports take a plain [`crate::status::AgentView`] of it.

use std::{collections::HashSet, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    changes::{self, Changes},
    compile::{self, Compiled, PolicyCounts, RuleRef},
    datapath::{DatapathError, Enforcer},
    flows::{self, SharedNames},
    policy::{Document, Invalid},
    status::{AgentView, InterfaceView},
};

/// Why an apply failed. Either way the previous generation stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The document is invalid (every problem, with its JSON path).
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The kernel side refused (maps, attaching).
    #[error("{0}")]
    Runtime(#[from] DatapathError),
}

impl ApplyError {
    /// SPEC §5: 2 for invalid input, 1 for a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ApplyError::Invalid(_) => 2,
            ApplyError::Runtime(_) => 1,
        }
    }
}

/// What `apply` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplySummary {
    pub generation: u64,
    #[serde(flatten)]
    pub counts: PolicyCounts,
    /// Validate + compile + write + swap, in milliseconds.
    pub apply_ms: f64,
    /// Where that time went.
    #[serde(default)]
    pub timings: ApplyTimings,
    pub changes: Changes,
    /// Interfaces of local instances that do not exist (yet): those instances are protected
    /// the moment their interface appears.
    #[serde(default)]
    pub waiting: Vec<String>,
    /// What is valid but probably not meant (SPEC §2), each with its JSON path and file.
    #[serde(default)]
    pub warnings: Vec<crate::policy::Problem>,
}

/// The steps of an apply, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ApplyTimings {
    /// Parse and validate the document.
    pub validate_ms: f64,
    /// Document → map entries.
    pub compile_ms: f64,
    /// Write the idle slot, flip, attach or detach interfaces.
    pub install_ms: f64,
}

/// A rule and its hits, for `status --rules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleHits {
    pub group: String,
    /// `ingress[0]`: the rule's place in its group.
    pub rule_id: String,
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Where one interface stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InterfaceState {
    /// Attached, and the live generation holds its instance's policy.
    Protected { ifindex: u32, generation: u64 },
    /// The live policy has an instance on it, but it does not exist (yet).
    Waiting,
    /// No local instance of the live policy uses it.
    NotInPolicy,
}

/// The live policy: the document, what it compiled to, and when it went live.
pub struct Live {
    pub document: Document,
    pub compiled: Compiled,
}

pub struct Agent {
    pub enforcer: Enforcer,
    pub generation: u64,
    pub applied_at: Option<SystemTime>,
    /// `None` until this agent applied or adopted a document.
    pub live: Option<Live>,
    /// Names for flow-log records, kept current with the live generation.
    pub names: SharedNames,
    /// This node's name (`run --node`): instances of other nodes are remote members here.
    pub node: Option<String>,
    /// An apply's bookkeeping is still to do (`catch_up`).
    behind: bool,
    /// Durations of this agent's applies (for metrics).
    pub apply_seconds: crate::status::ApplyHistogram,
}

impl Agent {
    /// An agent on loaded programs; the generation is whatever the pinned state holds.
    pub fn new(enforcer: Enforcer) -> Result<Agent, DatapathError> {
        let generation = enforcer.maps.live()?.map_or(0, |l| l.generation);
        Ok(Agent {
            enforcer,
            generation,
            applied_at: None,
            live: None,
            names: SharedNames::default(),
            apply_seconds: Default::default(),
            behind: false,
            node: None,
        })
    }

    /// Applies a document; on any error the previous generation stays in force.
    pub fn apply<S: AsRef<str>>(&mut self, document: &str, instances: &[S]) -> Result<ApplySummary, ApplyError> {
        let started = std::time::Instant::now();
        let mut doc = crate::policy::load_all(document, instances)?;
        if let Some(node) = &self.node {
            doc = doc.for_node(node);
        }
        let validated = std::time::Instant::now();
        let compiled = compile::compile(&doc)?;
        let compiled_at = std::time::Instant::now();
        let generation = self.generation + 1;
        self.enforcer.install(&compiled, generation)?;
        let ms = |from: std::time::Instant, to: std::time::Instant| (to - from).as_secs_f64() * 1000.0;
        let timings = ApplyTimings {
            validate_ms: ms(started, validated),
            compile_ms: ms(validated, compiled_at),
            install_ms: ms(compiled_at, std::time::Instant::now()),
        };
        let previous = self.live.as_ref().map(|l| (&l.document, &l.compiled));
        let changes = changes::diff(previous, &doc, &compiled);
        let summary = ApplySummary {
            generation,
            counts: PolicyCounts::of(&doc, &compiled),
            apply_ms: started.elapsed().as_secs_f64() * 1000.0,
            timings,
            changes,
            waiting: self.enforcer.waiting.iter().cloned().collect(),
            warnings: doc.warnings.clone(),
        };
        log::info!("generation {generation} live: {} ({:.1} ms)", summary.counts, summary.apply_ms);
        self.apply_seconds.observe(summary.apply_ms / 1000.0);
        self.generation = generation;
        self.applied_at = Some(SystemTime::now());
        self.live = Some(Live { document: doc, compiled });
        // The bookkeeping (counters of rules gone, flow-log names) waits until the client has
        // its answer: see `catch_up`.
        self.behind = true;
        Ok(summary)
    }

    /// Does the bookkeeping an apply left for after its answer, if any.
    pub fn catch_up(&mut self) {
        if std::mem::take(&mut self.behind) {
            self.after_change();
        }
    }

    /// At start-up: takes over the live generation a previous agent left if the document
    /// compiles to exactly it (same generation, no swap, tracked flows untouched); otherwise
    /// applies the document as the next generation.
    pub fn start<S: AsRef<str>>(&mut self, document: &str, instances: &[S]) -> Result<u64, ApplyError> {
        let (doc, compiled) = compile::prepare_for_node(document, instances, self.node.as_deref())?;
        if let Some(generation) = self.enforcer.adopt(&compiled)? {
            log::info!("adopted generation {generation} from the pinned state (the document compiles to it)");
            self.generation = generation;
            self.applied_at = Some(SystemTime::now());
            self.live = Some(Live { document: doc, compiled });
            self.after_change();
            return Ok(generation);
        }
        self.apply(document, instances).map(|s| s.generation)
    }

    /// Interfaces appeared, vanished or were re-created: if that changes which of the live
    /// policy's interfaces exist, installs the live policy again as the next generation, which
    /// attaches the new ones and forgets the gone ones (and their tracked flows). Returns the
    /// new generation, if there is one.
    pub fn reconcile_interfaces(&mut self) -> Result<Option<u64>, DatapathError> {
        let Some(live) = &self.live else { return Ok(None) };
        if !self.enforcer.interfaces_changed(&live.compiled) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let generation = self.generation + 1;
        self.enforcer.install(&live.compiled, generation)?;
        self.generation = generation;
        self.applied_at = Some(SystemTime::now());
        log::info!(
            "generation {generation} live: interfaces changed, {} attached, {} waiting ({:.1} ms)",
            self.enforcer.attached.len(),
            self.enforcer.waiting.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        self.after_change();
        Ok(Some(generation))
    }

    /// Where an interface stands, for `wait-protected`.
    pub fn interface_state(&self, name: &str) -> InterfaceState {
        let wanted = self.live.as_ref().is_some_and(|l| l.compiled.ifaces.iter().any(|i| i.interface == name));
        let attached = self.enforcer.attached.get(name).map(|a| a.ifindex);
        match (wanted, attached) {
            (false, _) => InterfaceState::NotInPolicy,
            (true, Some(ifindex)) => InterfaceState::Protected { ifindex, generation: self.generation },
            (true, None) => InterfaceState::Waiting,
        }
    }

    /// Bookkeeping once a generation is live: flow-log names, and the hit counters of rules the
    /// policy no longer has (an unchanged rule keeps its counter).
    fn after_change(&mut self) {
        let Some(live) = &self.live else { return };
        let keep: HashSet<u64> = live.compiled.rules.iter().map(RuleRef::counter_id).collect();
        self.enforcer.maps.prune_rule_counters(&keep);
        if let Ok(mut names) = self.names.lock() {
            names.rules = flows::rule_names(&live.compiled);
            names.interfaces = live
                .compiled
                .ifaces
                .iter()
                .filter_map(|i| {
                    let ifindex = self.enforcer.attached.get(&i.interface)?.ifindex;
                    Some((ifindex, (i.interface.clone(), Some(i.instance.clone()))))
                })
                .collect();
        }
    }

    /// Every rule of the live policy with its hits.
    pub fn rule_hits(&self) -> Vec<RuleHits> {
        let Some(live) = &self.live else { return Vec::new() };
        let hits = self.enforcer.maps.rule_hits();
        live.compiled
            .rules
            .iter()
            .map(|r| {
                let c = hits.get(&r.counter_id()).copied().unwrap_or_default();
                RuleHits {
                    group: r.group.clone(),
                    rule_id: format!("{}[{}]", r.direction.name(), r.rule_index),
                    rule: r.to_string(),
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect()
    }

    /// What reports need to know about this agent, as plain data.
    pub fn view(&self) -> AgentView {
        let interfaces = self
            .live
            .iter()
            .flat_map(|l| &l.compiled.ifaces)
            .map(|i| {
                let view = InterfaceView {
                    instance: i.instance.clone(),
                    attachment: self.enforcer.attached.get(&i.interface).cloned(),
                    waiting: self.enforcer.waiting.contains(&i.interface),
                    config: i.config,
                };
                (i.interface.clone(), view)
            })
            .collect();
        AgentView {
            applied_at: self.applied_at,
            interfaces,
            policy: self.live.as_ref().map(|l| PolicyCounts::of(&l.document, &l.compiled)),
            gc: None,
            programs: self.enforcer.program_infos(),
            apply_seconds: self.apply_seconds.clone(),
            store: None,
        }
    }
}
