//! Deterministic study data from a seed and a size profile.
//!
//! Small collections (sites, forms, variables, intervals, users) are built once. Large ones
//! (subjects, records, revisions, queries, codings, visits) are computed from `(seed, index)`
//! on demand, so serving a page of a million-record study costs O(page size) memory.
//! Ids grow with the index, so index order is the default (id ascending) sort order.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use super::model::{fmt_date, fmt_timestamp};

/// Size of one generated study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySpec {
    pub key: String,
    pub name: String,
    pub sites: usize,
    pub subjects: usize,
    pub intervals: usize,
    pub subject_forms: usize,
    pub site_forms: usize,
    pub vars_per_form: usize,
    pub records: usize,
    pub users: usize,
    /// Share (0–100) of answers served as `""` (unanswered).
    pub empty_percent: u8,
}

/// A set of studies to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub studies: Vec<StudySpec>,
}

impl Profile {
    /// Three small studies (one key with a space and a slash, to exercise path encoding).
    pub fn demo() -> Self {
        let s = |key: &str, name: &str, sites, subjects, intervals, forms, vars, users, empty| {
            StudySpec {
                key: key.into(),
                name: name.into(),
                sites,
                subjects,
                intervals,
                subject_forms: forms,
                site_forms: 1,
                vars_per_form: vars,
                records: subjects * intervals * forms,
                users,
                empty_percent: empty,
            }
        };
        Self {
            studies: vec![
                s("DEMO", "Demo Study", 4, 30, 4, 4, 8, 5, 8),
                s("ONC-202", "Oncology Phase II", 3, 20, 3, 3, 6, 4, 8),
                // Fully answered, so exports that cannot mix "" and numbers work on it.
                s("CV 3/B", "Cardio \"B\" arm", 2, 8, 2, 2, 5, 3, 0),
            ],
        }
    }

    /// One study with `records` records and `vars` variables on each of its 3 subject forms
    /// (e.g. `bench(100_000, 60)` for benchmarks; `bench(1_000_000, 10)` is the large profile).
    pub fn bench(records: usize, vars: usize) -> Self {
        let subjects = (records / 50).clamp(1, 50_000);
        Self {
            studies: vec![StudySpec {
                key: "BENCH".into(),
                name: format!("Benchmark {records} records"),
                sites: 20,
                subjects,
                intervals: 10,
                subject_forms: 3,
                site_forms: 1,
                vars_per_form: vars.max(1),
                records,
                users: 10,
                empty_percent: 8,
            }],
        }
    }

    /// The large profile: the demo studies plus `LARGE` with 1,000,000 records.
    pub fn large() -> Self {
        let mut p = Self::demo();
        let mut big = Self::bench(1_000_000, 10).studies.remove(0);
        big.key = "LARGE".into();
        big.name = "Large Study".into();
        p.studies.push(big);
        p
    }

    /// `demo`, `large`, or `bench:RECORDSxVARS` (e.g. `bench:100000x60`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "demo" => Some(Self::demo()),
            "large" => Some(Self::large()),
            _ => {
                let spec = s.strip_prefix("bench:")?;
                let (r, v) = spec.split_once('x').unwrap_or((spec, "60"));
                Some(Self::bench(r.parse().ok()?, v.parse().ok()?))
            }
        }
    }
}

/// SplitMix64 finaliser: cheap, well-mixed, stateless.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const VAR_TYPES: [&str; 8] = [
    "TEXT",
    "NUMBER",
    "DATE",
    "RADIO",
    "CHECKBOX",
    "DROPDOWN",
    "MEMO",
    "CALCULATED",
];
const FORM_KEYS: [&str; 10] = ["DM", "VS", "AE", "LB", "CM", "MH", "EX", "EG", "QS", "PE"];
const CITIES: [&str; 8] = [
    "Boston General",
    "Lyon Sud",
    "St. Mary's",
    "Osaka Central",
    "Rio Clinic",
    "Oslo Univ",
    "Cape Town",
    "Austin Med",
];
const CHOICES: [&str; 4] = ["1", "2", "3", "4"];
const ROLES: [&str; 3] = ["Data Manager", "Investigator", "Monitor"];
const STATUSES: [&str; 5] = ["Screened", "Enrolled", "Enrolled", "Completed", "Withdrawn"];
const WORDS: [&str; 10] = [
    "headache",
    "nausea",
    "Fatigue",
    "rash",
    "cough",
    "Dizziness",
    "fever",
    "insomnia",
    "pain",
    "none",
];

/// (name, type) of one variable, in form order.
#[derive(Debug, Clone)]
pub struct VarDef {
    pub name: String,
    pub ty: &'static str,
}

/// Everything needed to generate one study.
#[derive(Debug)]
pub struct StudyData {
    pub spec: StudySpec,
    pub study_id: i64,
    seed: u64,
    /// Epoch seconds all dates of this study start from.
    epoch: i64,
    pub study: Value,
    pub sites: Vec<Value>,
    pub forms: Vec<Value>,
    pub variables: Vec<Value>,
    pub intervals: Vec<Value>,
    pub users: Vec<Value>,
    /// Variables of each form (index = form index).
    pub form_vars: Vec<Vec<VarDef>>,
    /// Per form: `(variable index, "name":)` in the order a serialised map lists keys.
    data_order: Vec<Vec<(usize, Vec<u8>)>>,
}

/// 2024-01-01T00:00:00Z.
const BASE_EPOCH: i64 = 1_704_067_200;

impl StudyData {
    /// Build the fixed part of a study. `role_dates_as_arrays` serves user-role dates in the
    /// documented integer-array form (SDK 0.5.0 cannot parse it, so it is off by default).
    pub fn new(seed: u64, index: usize, spec: StudySpec, role_dates_as_arrays: bool) -> Self {
        let study_id = index as i64 + 1;
        let seed = mix(seed ^ ((index as u64) << 32));
        let epoch = BASE_EPOCH + index as i64 * 86_400 * 3;
        let key = spec.key.clone();
        let ts = |off: i64| fmt_timestamp(epoch + off);
        let study = json!({
            "sponsorKey": "SPONSOR-1", "studyKey": key, "studyId": study_id,
            "studyName": spec.name, "studyDescription": format!("Simulated study {}", spec.name),
            "studyType": "STUDY", "dateCreated": ts(0), "dateModified": ts(3600),
        });
        let sites = (0..spec.sites)
            .map(|i| {
                json!({
                    "studyKey": key, "siteId": i + 1,
                    "siteName": format!("{} {}", CITIES[i % CITIES.len()], i + 1),
                    "siteEnrollmentStatus": if i % 4 == 3 { "Closed" } else { "Enrollment Open" },
                    "dateCreated": ts(i as i64 * 60), "dateModified": ts(i as i64 * 60 + 30),
                })
            })
            .collect();
        let n_forms = spec.subject_forms + spec.site_forms;
        let mut forms = Vec::with_capacity(n_forms);
        let mut variables = Vec::new();
        let mut form_vars = Vec::with_capacity(n_forms);
        for f in 0..n_forms {
            let site_form = f >= spec.subject_forms;
            let form_key = if site_form {
                format!("SITE{}", f - spec.subject_forms + 1)
            } else if f < FORM_KEYS.len() {
                FORM_KEYS[f].to_string()
            } else {
                format!("F{}", f + 1)
            };
            let form_name = format!("{form_key} form");
            forms.push(json!({
                "studyKey": key, "formId": f + 1, "formKey": form_key, "formName": form_name,
                "formType": if site_form { "SITE" } else { "SUBJECT" }, "revision": 1 + f % 3,
                "embeddedLog": false, "enforceOwnership": f % 2 == 0, "userAgreement": false,
                "subjectRecordReport": !site_form, "unscheduledVisit": f % 3 == 2,
                "otherForms": false, "eproForm": false, "allowCopy": true, "disabled": false,
                "dateCreated": ts(f as i64 * 120), "dateModified": ts(f as i64 * 120 + 60),
            }));
            let mut defs = Vec::with_capacity(spec.vars_per_form);
            for v in 0..spec.vars_per_form {
                let ty = VAR_TYPES[(v + f) % VAR_TYPES.len()];
                let name = format!("{form_key}_{}{}", ty.to_ascii_lowercase(), v + 1);
                let vid = variables.len() + 1;
                variables.push(json!({
                    "studyKey": key, "variableId": vid, "variableType": ty, "variableName": name,
                    "sequence": v + 1, "revision": 1, "disabled": false,
                    "dateCreated": ts(vid as i64 * 10), "dateModified": ts(vid as i64 * 10 + 5),
                    "formId": f + 1, "variableOid": if v % 5 == 4 { Value::Null } else { json!(format!("OID.{name}")) },
                    "deleted": false, "formKey": form_key, "formName": form_name,
                    "label": format!("{} question {}", form_name, v + 1), "blinded": v % 7 == 6,
                }));
                defs.push(VarDef { name, ty });
            }
            form_vars.push(defs);
        }
        let interval_forms: Vec<Value> = forms
            .iter()
            .take(spec.subject_forms)
            .map(|f| json!({"formId": f["formId"], "formKey": f["formKey"], "formName": f["formName"]}))
            .collect();
        let intervals = (0..spec.intervals)
            .map(|k| {
                json!({
                    "studyKey": key, "intervalId": k + 1, "intervalName": interval_name(k),
                    "intervalDescription": format!("Scheduled visit {}", k + 1),
                    "intervalSequence": (k + 1) * 10, "intervalGroupId": 1 + k / 4,
                    "intervalGroupName": format!("Period {}", 1 + k / 4), "timeline": "Start Date - End Date",
                    "definedUsingInterval": if k == 0 { "" } else { "Baseline" },
                    "windowCalculationForm": "", "windowCalculationDate": "",
                    "actualDateForm": "DM form", "actualDate": "Visit date",
                    "dueDateWillBeIn": k * 28, "negativeSlack": 3, "positiveSlack": 3,
                    "eproGracePeriod": 2, "forms": interval_forms, "disabled": false,
                    "dateCreated": ts(k as i64 * 300), "dateModified": ts(k as i64 * 300 + 100),
                })
            })
            .collect();
        let users = (0..spec.users)
            .map(|u| {
                let h = mix(seed ^ 0x5553_4552 ^ u as u64);
                let (created, modified) = if role_dates_as_arrays {
                    let (s1, s2) = (epoch + u as i64 * 7, epoch + u as i64 * 7 + 86_400);
                    (date_array(s1), date_array(s2))
                } else {
                    (json!(ts(u as i64 * 7)), json!(ts(u as i64 * 7 + 86_400)))
                };
                json!({
                    "userId": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, (h >> 20) & 0xfff, mix(h) & 0xffff_ffff_ffff),
                    "login": format!("user{}", u + 1), "firstName": format!("First{}", u + 1),
                    "lastName": format!("Last{}", u + 1), "email": format!("user{}@example.org", u + 1),
                    "userActiveInStudy": u % 4 != 3,
                    "roles": [{
                        "dateCreated": created, "dateModified": modified,
                        "roleId": format!("role-{}", u % 3 + 1), "communityId": 1,
                        "name": ROLES[u % 3],
                        "description": "Simulated role", "level": u % 3 + 1, "type": "STUDY",
                        "inactive": u % 4 == 3,
                    }],
                })
            })
            .collect();
        let data_order = form_vars
            .iter()
            .map(|vars| {
                let mut keys: Vec<(usize, Vec<u8>)> = vars
                    .iter()
                    .enumerate()
                    .map(|(v, def)| {
                        let mut key = Vec::new();
                        put(&mut key, def.name.as_str());
                        key.push(b':');
                        (v, key)
                    })
                    .collect();
                keys.sort_by(|a, b| vars[a.0].name.cmp(&vars[b.0].name));
                keys
            })
            .collect();
        Self {
            spec,
            study_id,
            seed,
            epoch,
            study,
            sites,
            forms,
            variables,
            intervals,
            users,
            form_vars,
            data_order,
        }
    }

    fn h(&self, kind: u64, i: usize, j: u64) -> u64 {
        mix(self.seed ^ mix(kind << 56 ^ (i as u64) << 8 ^ j))
    }

    fn ts(&self, off: i64) -> String {
        fmt_timestamp(self.epoch + off)
    }

    pub fn n_subjects(&self) -> usize {
        self.spec.subjects
    }
    pub fn n_records(&self) -> usize {
        self.spec.records
    }
    /// Two revisions per record.
    pub fn n_revisions(&self) -> usize {
        self.spec.records * 2
    }
    pub fn n_queries(&self) -> usize {
        self.spec.records.div_ceil(10)
    }
    pub fn n_codings(&self) -> usize {
        self.spec.records.div_ceil(25)
    }
    pub fn n_visits(&self) -> usize {
        self.spec.subjects * self.spec.intervals
    }

    fn subject_key(&self, s: usize) -> String {
        format!("{:02}-{:03}", s % self.spec.sites.max(1) + 1, s + 1)
    }

    /// Subject `s` (0-based).
    pub fn subject(&self, s: usize) -> Value {
        let site = s % self.spec.sites.max(1);
        let h = self.h(1, s, 0);
        json!({
            "studyKey": self.spec.key, "subjectId": s + 1, "subjectOid": format!("OID-S{}", s + 1),
            "subjectKey": self.subject_key(s),
            "subjectStatus": STATUSES[(h % 5) as usize],
            "siteId": site + 1, "siteName": self.site_name(site), "deleted": h % 40 == 7,
            "enrollmentStartDate": fmt_date(self.epoch + s as i64 * 3600),
            "dateCreated": self.ts(s as i64 * 3600), "dateModified": self.ts(s as i64 * 3600 + (h % 86_400) as i64),
            "keywords": if h.is_multiple_of(6) { json!([{"keywordName": "Priority", "keywordKey": "PRI", "keywordId": 1, "dateAdded": self.ts(s as i64 * 3600 + 60)}]) } else { json!([]) },
        })
    }

    fn site_name(&self, site: usize) -> Value {
        self.sites
            .get(site)
            .map(|s| s["siteName"].clone())
            .unwrap_or(Value::Null)
    }

    /// Which form, subject (or site) and interval record `i` belongs to.
    fn record_slot(&self, i: usize) -> (usize, Option<usize>, usize, usize) {
        let sp = &self.spec;
        let (sf, s, k) = (
            sp.subject_forms.max(1),
            sp.subjects.max(1),
            sp.intervals.max(1),
        );
        // Every 97th record is a SITE-form record when the study has site forms.
        if sp.site_forms > 0 && i % 97 == 96 {
            let form = sp.subject_forms + (i / 97) % sp.site_forms;
            return (form, None, (i / 97) % sp.sites.max(1), 0);
        }
        let subject = (i / sf) % s;
        (
            i % sf,
            Some(subject),
            subject % sp.sites.max(1),
            (i / (sf * s)) % k,
        )
    }

    /// The answer to variable `v` (of type `ty`) on record `i`.
    fn answer(&self, ty: &str, i: usize, v: usize) -> Answer {
        let h = self.h(2, i, v as u64);
        if h % 100 < u64::from(self.spec.empty_percent) {
            return Answer::Text(Cow::Borrowed(""));
        }
        let r = h >> 8;
        match ty {
            "NUMBER" => {
                if r.is_multiple_of(3) {
                    Answer::Float((r % 2000) as f64 / 10.0)
                } else {
                    Answer::Int(r % 120)
                }
            }
            "DATE" => Answer::Text(Cow::Owned(fmt_date(self.epoch + (r % 400) as i64 * 86_400))),
            "RADIO" | "DROPDOWN" => Answer::Text(Cow::Borrowed(CHOICES[(r % 4) as usize])),
            "CHECKBOX" => Answer::Bool(r.is_multiple_of(2)),
            "CALCULATED" => Answer::Int(r % 1000),
            "MEMO" => Answer::Text(Cow::Owned(format!(
                "Patient reports {} and {}, \"mild\"; follow-up, see notes",
                WORDS[(r % 10) as usize],
                WORDS[(r / 10 % 10) as usize]
            ))),
            // Some TEXT answers start with formula characters so exports must guard them.
            _ => Answer::Text(Cow::Borrowed(match r % 25 {
                0 => "=1+1",
                1 => "-5 units",
                2 => "@home",
                _ => WORDS[(r % 10) as usize],
            })),
        }
    }

    /// Where record `i` sits and its dates, shared by both encodings of a record.
    fn record_parts(&self, i: usize) -> RecordParts {
        let (form, subject, site, interval) = self.record_slot(i);
        let h = self.h(3, i, 0);
        let created = (i as i64) * 37 + (h % 600) as i64;
        let modified = created + (h >> 16) as i64 % (86_400 * 30);
        RecordParts {
            form,
            subject,
            site,
            interval,
            h,
            created,
            modified,
        }
    }

    /// Record `i` (0-based; recordId = i + 1).
    pub fn record(&self, i: usize) -> Value {
        let RecordParts {
            form,
            subject,
            site,
            interval,
            h,
            created,
            modified,
        } = self.record_parts(i);
        let mut data = Map::new();
        if let Some(vars) = self.form_vars.get(form) {
            for (v, def) in vars.iter().enumerate() {
                data.insert(def.name.clone(), self.answer(def.ty, i, v).into_value());
            }
        }
        let form_v = &self.forms[form];
        let mut rec = json!({
            "studyKey": self.spec.key, "intervalId": if subject.is_some() { interval + 1 } else { 0 },
            "formId": form + 1, "formKey": form_v["formKey"], "siteId": site + 1,
            "recordId": i + 1, "recordOid": format!("REC-{}", i + 1),
            "recordType": if subject.is_some() { "SUBJECT" } else { "SITE" },
            "recordStatus": if h % 10 < 7 { "Record Complete" } else { "Record Incomplete" },
            "deleted": h % 50 == 3, "dateCreated": self.ts(created), "dateModified": self.ts(modified),
            "subjectId": 0, "subjectOid": "", "subjectKey": "", "visitId": 0, "parentRecordId": 0,
            "keywords": [], "recordData": data,
        });
        if let Some(s) = subject {
            rec["subjectId"] = json!(s + 1);
            rec["subjectOid"] = json!(format!("OID-S{}", s + 1));
            rec["subjectKey"] = json!(self.subject_key(s));
            rec["visitId"] = json!(s * self.spec.intervals + interval + 1);
        }
        rec
    }

    /// Record `i` appended to `out` as JSON, byte for byte what serialising [`Self::record`]
    /// gives (keys in sorted order), without building a `Value`: serving a page costs a
    /// fraction of it.
    pub fn write_record_json(&self, i: usize, out: &mut Vec<u8>) {
        let RecordParts {
            form,
            subject,
            site,
            interval,
            h,
            created,
            modified,
        } = self.record_parts(i);
        out.extend_from_slice(b"{\"dateCreated\":");
        put(out, &self.ts(created));
        out.extend_from_slice(b",\"dateModified\":");
        put(out, &self.ts(modified));
        out.extend_from_slice(if h % 50 == 3 {
            b",\"deleted\":true,\"formId\":"
        } else {
            b",\"deleted\":false,\"formId\":"
        });
        put(out, &(form + 1));
        out.extend_from_slice(b",\"formKey\":");
        put(out, &self.forms[form]["formKey"]);
        out.extend_from_slice(b",\"intervalId\":");
        put(out, &subject.map_or(0, |_| interval + 1));
        out.extend_from_slice(b",\"keywords\":[],\"parentRecordId\":0,\"recordData\":{");
        if let (Some(vars), Some(order)) = (self.form_vars.get(form), self.data_order.get(form)) {
            for (n, (v, key)) in order.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                self.answer(vars[*v].ty, i, *v).write_json(out);
            }
        }
        out.extend_from_slice(b"},\"recordId\":");
        put(out, &(i + 1));
        out.extend_from_slice(b",\"recordOid\":\"REC-");
        put(out, &(i + 1));
        out.extend_from_slice(if h % 10 < 7 {
            b"\",\"recordStatus\":\"Record Complete\""
        } else {
            b"\",\"recordStatus\":\"Record Incomplete\""
        });
        out.extend_from_slice(if subject.is_some() {
            b",\"recordType\":\"SUBJECT\",\"siteId\":"
        } else {
            b",\"recordType\":\"SITE\",\"siteId\":"
        });
        put(out, &(site + 1));
        out.extend_from_slice(b",\"studyKey\":");
        put(out, &self.spec.key);
        match subject {
            Some(s) => {
                out.extend_from_slice(b",\"subjectId\":");
                put(out, &(s + 1));
                out.extend_from_slice(b",\"subjectKey\":");
                put(out, &self.subject_key(s));
                out.extend_from_slice(b",\"subjectOid\":\"OID-S");
                put(out, &(s + 1));
                out.extend_from_slice(b"\",\"visitId\":");
                put(out, &(s * self.spec.intervals + interval + 1));
            }
            None => out.extend_from_slice(
                b",\"subjectId\":0,\"subjectKey\":\"\",\"subjectOid\":\"\",\"visitId\":0",
            ),
        }
        out.push(b'}');
    }

    /// Record revision `j` (two per record: the original entry and one change).
    pub fn revision(&self, j: usize) -> Value {
        let rec = self.record(j / 2);
        let n = j % 2 + 1;
        let u = (self.h(4, j, 0) % self.spec.users.max(1) as u64) as usize;
        json!({
            "studyKey": self.spec.key, "recordRevisionId": j + 1, "recordId": rec["recordId"],
            "recordOid": rec["recordOid"], "recordRevision": n, "dataRevision": n,
            "recordStatus": rec["recordStatus"], "subjectId": rec["subjectId"],
            "subjectOid": rec["subjectOid"], "subjectKey": rec["subjectKey"], "siteId": rec["siteId"],
            "formKey": rec["formKey"], "intervalId": rec["intervalId"],
            "role": ROLES[u % 3], "user": format!("user{}", u + 1),
            "reasonForChange": if n == 1 { "" } else { "Data entry error" }, "deleted": rec["deleted"],
            "dateCreated": if n == 1 { rec["dateCreated"].clone() } else { rec["dateModified"].clone() },
        })
    }

    /// Query `q` on record `q * 10 + 3`.
    pub fn query(&self, q: usize) -> Value {
        let r = (q * 10 + 3) % self.spec.records.max(1);
        let rec = self.record(r);
        let form = (rec["formId"].as_u64().unwrap_or(1) as usize).saturating_sub(1);
        let variable = self
            .form_vars
            .get(form)
            .and_then(|v| v.first())
            .map(|d| d.name.clone())
            .unwrap_or_default();
        let h = self.h(5, q, 0);
        let n_comments = 1 + (h % 3) as usize;
        let comments: Vec<Value> = (0..n_comments)
            .map(|c| {
                let last = c + 1 == n_comments;
                json!({
                    "sequence": c + 1,
                    "annotationStatus": if last && h.is_multiple_of(2) { "Closed" } else { "Open" },
                    "user": format!("user{}", c % self.spec.users.max(1) + 1),
                    "comment": format!("Please verify {variable} (note {})", c + 1),
                    "closed": last && h.is_multiple_of(2), "date": self.ts(r as i64 * 37 + 3600 * (c as i64 + 1)),
                })
            })
            .collect();
        json!({
            "studyKey": self.spec.key, "subjectId": rec["subjectId"], "subjectOid": rec["subjectOid"],
            "annotationType": "subject", "annotationId": q + 1,
            "type": if h.is_multiple_of(3) { Value::Null } else { json!("Query") },
            "description": format!("Check value of {variable}"), "recordId": rec["recordId"],
            "variable": variable, "subjectKey": rec["subjectKey"],
            "dateCreated": self.ts(r as i64 * 37 + 3600), "dateModified": self.ts(r as i64 * 37 + 7200),
            "queryComments": comments,
        })
    }

    /// Coding `c` on record `c * 25 + 7`.
    pub fn coding(&self, c: usize) -> Value {
        let r = (c * 25 + 7) % self.spec.records.max(1);
        let rec = self.record(r);
        let form = (rec["formId"].as_u64().unwrap_or(1) as usize).saturating_sub(1);
        let h = self.h(6, c, 0);
        let word = WORDS[(h % 10) as usize];
        json!({
            "studyKey": self.spec.key, "siteName": self.site_name((rec["siteId"].as_u64().unwrap_or(1) as usize).saturating_sub(1)),
            "siteId": rec["siteId"], "subjectId": rec["subjectId"], "subjectKey": rec["subjectKey"],
            "formId": rec["formId"], "formName": self.forms[form]["formName"], "formKey": rec["formKey"],
            "revision": 1, "recordId": rec["recordId"],
            "variable": self.form_vars.get(form).and_then(|v| v.first()).map(|d| d.name.clone()).unwrap_or_default(),
            "value": word, "codingId": c + 1, "code": format!("{}", 10_000_000 + h % 9_000_000),
            "codedBy": "user1", "reason": "", "dictionaryName": "MedDRA", "dictionaryVersion": "27.0",
            "dateCoded": self.ts(r as i64 * 37 + 86_400),
        })
    }

    /// Visit `v` = subject `v / intervals`, interval `v % intervals`.
    pub fn visit(&self, v: usize) -> Value {
        let k = self.spec.intervals.max(1);
        let (s, iv) = (v / k, v % k);
        let start = self.epoch + s as i64 * 3600 + iv as i64 * 28 * 86_400;
        let h = self.h(7, v, 0);
        json!({
            "visitId": v + 1, "studyKey": self.spec.key, "intervalId": iv + 1,
            "intervalName": interval_name(iv), "subjectId": s + 1, "subjectKey": self.subject_key(s),
            "startDate": fmt_date(start - 3 * 86_400), "endDate": fmt_date(start + 3 * 86_400),
            "dueDate": if h.is_multiple_of(4) { Value::Null } else { json!(fmt_date(start)) },
            "visitDate": fmt_date(start + (h % 3) as i64 * 86_400), "visitDateForm": "DM form",
            "visitDateQuestion": "Visit date", "deleted": h % 60 == 5,
            "dateCreated": self.ts(start - self.epoch), "dateModified": self.ts(start - self.epoch + 600),
        })
    }
}

/// One generated `recordData` answer, before it becomes JSON.
enum Answer {
    Text(Cow<'static, str>),
    Int(u64),
    Float(f64),
    Bool(bool),
}

impl Answer {
    fn into_value(self) -> Value {
        match self {
            Answer::Text(s) => Value::String(s.into_owned()),
            Answer::Int(n) => json!(n),
            Answer::Float(f) => json!(f),
            Answer::Bool(b) => Value::Bool(b),
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Answer::Text(s) => put(out, s.as_ref()),
            Answer::Int(n) => put(out, n),
            Answer::Float(f) => put(out, f),
            Answer::Bool(b) => put(out, b),
        }
    }
}

/// The computed facts of one record (see [`StudyData::record_parts`]).
struct RecordParts {
    form: usize,
    subject: Option<usize>,
    site: usize,
    interval: usize,
    h: u64,
    created: i64,
    modified: i64,
}

/// Append `v` as JSON, encoded exactly as inside a serialised `Value`.
fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing plain values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn interval_name(k: usize) -> String {
    match k {
        0 => "Screening".into(),
        1 => "Baseline".into(),
        _ => format!("Week {}", (k - 1) * 4),
    }
}

/// `[y, m, d, h, min, s, nanos]`, the documented user-role date form.
fn date_array(secs: i64) -> Value {
    let (y, m, d) = super::model::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    json!([y, m, d, s / 3600, s / 60 % 60, s % 60, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_consistent() {
        let spec = Profile::demo().studies.remove(0);
        let a = StudyData::new(7, 0, spec.clone(), false);
        let b = StudyData::new(7, 0, spec, false);
        assert_eq!(a.record(42), b.record(42));
        let r = a.record(5);
        assert_eq!(r["recordId"], 6);
        let visit = a.visit(r["visitId"].as_u64().unwrap() as usize - 1);
        assert_eq!(visit["subjectKey"], r["subjectKey"]);
        assert_eq!(visit["intervalId"], r["intervalId"]);
        assert_eq!(a.revision(11)["recordId"], 6);
        assert!(a.query(0).get("queryComments").is_some());
        // Some empty answers exist.
        let empties = (0..200)
            .flat_map(|i| {
                a.record(i)["recordData"]
                    .as_object()
                    .unwrap()
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|v| v == "")
            .count();
        assert!(empties > 0);
    }

    #[test]
    fn direct_record_json_matches_the_value_encoding() {
        let mut specs = Profile::demo().studies;
        specs.extend(Profile::bench(5_000, 13).studies);
        for (n, spec) in specs.into_iter().enumerate() {
            let d = StudyData::new(42, n, spec, false);
            // Every 97th record is a SITE-form record, so 500 covers both kinds.
            for i in (0..d.n_records()).take(500) {
                let mut direct = Vec::new();
                d.write_record_json(i, &mut direct);
                let via_value = serde_json::to_vec(&d.record(i)).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&direct),
                    String::from_utf8_lossy(&via_value),
                    "study {n}, record {i}"
                );
            }
        }
    }
}
