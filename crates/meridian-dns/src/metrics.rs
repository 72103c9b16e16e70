//! Prometheus metrics of GeoDNS. Names are constants so code and dashboards cannot drift;
//! labels are bounded: query types outside a fixed list count as `other`, never a name.

/// Queries answered (or dropped as unanswerable: `rcode="dropped"`), by query type and rcode.
pub const QUERIES: &str = "meridian_dns_queries_total";
/// Policy answers, by region answered with (one count per region in the answer).
pub const ANSWERS: &str = "meridian_dns_answers_total";
/// Queries carrying an EDNS Client Subnet option.
pub const ECS: &str = "meridian_dns_ecs_total";
/// UDP answers truncated (TC set) because they exceeded the client's payload size.
pub const TRUNCATED: &str = "meridian_dns_truncated_total";

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::answer::Trace;

/// The `qtype` label: the type's name for common types, else `other`.
pub fn qtype_label(t: Option<RecordType>) -> &'static str {
    match t {
        Some(RecordType::A) => "A",
        Some(RecordType::AAAA) => "AAAA",
        Some(RecordType::CNAME) => "CNAME",
        Some(RecordType::TXT) => "TXT",
        Some(RecordType::MX) => "MX",
        Some(RecordType::NS) => "NS",
        Some(RecordType::SOA) => "SOA",
        Some(RecordType::ANY) => "ANY",
        Some(RecordType::SRV) => "SRV",
        Some(RecordType::HTTPS) => "HTTPS",
        Some(RecordType::PTR) => "PTR",
        None => "none",
        Some(_) => "other",
    }
}

/// The `rcode` label.
pub fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

/// Counts one answered query.
pub fn record(trace: &Trace) {
    for c in counters(trace) {
        c.increment(1);
    }
}

/// The counters one answered query increments (each by one): what [`record`] does, as
/// handles a cached answer keeps so that counting it again costs no lookup.
pub fn counters(trace: &Trace) -> Vec<metrics::Counter> {
    let mut out = vec![
        metrics::counter!(QUERIES, "qtype" => qtype_label(trace.qtype), "rcode" => rcode_label(trace.rcode)),
    ];
    if trace.ecs {
        out.push(metrics::counter!(ECS));
    }
    if trace.truncated {
        out.push(metrics::counter!(TRUNCATED));
    }
    for p in &trace.policy {
        for r in &p.regions {
            out.push(metrics::counter!(ANSWERS, "region" => r.clone()));
        }
    }
    out
}

/// Counts one packet that got no answer (shorter than a header, or a response).
pub fn dropped() {
    metrics::counter!(QUERIES, "qtype" => "none", "rcode" => "dropped").increment(1);
}
