# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of ``pingpost.targeting``: same answers, in microseconds.

Eligibility runs for every ping over every campaign of its vertical, so the work is
split: at build time each filter becomes something a C loop can test in a few
instructions; per ping, everything that depends only on the ping (its state, zip, seller,
source, attribute values, each time zone's minute of the week) is looked up once. The
layout is described in docs/targeting.md; the reference stays the definition, and
whatever is too odd to compile exactly (huge integers, values of unexpected types) is
handed back to it.

It imports nothing of the reference: the terms both share come from
``pingpost.targeting_terms``, read once at import, and ``Core`` and ``Ranker`` are given
the reference's parts and functions they need (``targeting.CoreInput``,
``targeting.reference_rank``) when ``pingpost.targeting`` builds them.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.math cimport isfinite, modf, nearbyint
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t, uint8_t, INT64_MIN
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

from pingpost import targeting_terms


cdef extern from *:
    int lowest_bit "__builtin_ctz"(unsigned int x) nogil
    int bit_length64 "64 - __builtin_clzll"(unsigned long long x) nogil  # x > 0
    bint mul_overflows "__builtin_mul_overflow"(int64_t a, int64_t b, int64_t* product) nogil


cdef extern from "Python.h":
    # Borrowed/stolen references without Cython's refcount bookkeeping: the output lists
    # are filled with objects built once at index time.
    PyObject* PyDict_GetItem(object d, object key)
    PyObject* list_get "PyList_GET_ITEM"(object lst, Py_ssize_t i)
    void list_set "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject* item)
    void incref "Py_INCREF"(PyObject* o)
    object PyList_New(Py_ssize_t n)


# The keyed filters: the key family of the ping each looks up, and whether a listed key
# passes it (a list to be in) or fails it (an exclusion). Per ping they are answered
# together from inverted lists; a filter's bit is its place in FILTER_ORDER.
cdef enum:
    STATE, ZIP, ZIP_PREFIX, SELLER, SOURCE, N_FAMILIES
cdef dict KEYED = {"states": (STATE, True), "exclude_states": (STATE, False), "zips": (ZIP, True),
                   "exclude_zips": (ZIP, False), "zip_prefixes": (ZIP_PREFIX, True), "sellers": (SELLER, True),
                   "exclude_sellers": (SELLER, False), "sources": (SOURCE, True), "exclude_sources": (SOURCE, False)}
# What the campaign loop finds for a campaign besides a reason kind (which is >= 0).
cdef enum:
    PASS = -1
    NOT_A_BLOCK = -2           # a block byte the terms do not define
    RULE_FAILED = -3           # minus the rule reference: the campaign's rule that failed

# The layout derived from the terms by read_terms() below, at import.
cdef int MIN_QUALITY, SCHEDULE      # filter bits after the keyed ones'; a filter's bit is its reason kind
cdef unsigned int INCLUDE = 0, EXCLUDE = 0  # the keyed filters' bits a listed key passes / fails
cdef int FAMILY[16]                 # keyed filter bit -> key family
cdef int FIRST_BLOCK                # reason kinds: the filters' (rules have their own list, see
cdef int R_OVER_MAX, REASON_KINDS   # Core.rule_reasons), one per block code, skipped:max_buyers
cdef int16_t BLOCK_KIND[256]        # block byte -> its reason kind, PASS or NOT_A_BLOCK


cdef tuple read_terms(object terms):
    """The C layout from ``targeting_terms``, or ``TermsError`` for terms it cannot encode:
    the loop answers the keyed filters at once, then min_quality, schedule and rules, in
    that order; blocks are the bytes of a ``bytearray``. Returns (the keyed filters in
    bit order, the text of each reason kind, the prefix of a rule's reason)."""
    global MIN_QUALITY, SCHEDULE, INCLUDE, EXCLUDE, FIRST_BLOCK, R_OVER_MAX, REASON_KINDS
    order, codes, n = tuple(terms.FILTER_ORDER), dict(terms.BLOCK_REASON), len(KEYED)
    if set(order[:n]) != set(KEYED) or order[n:] != ("min_quality", "schedule", "rules"):
        raise terms.TermsError(f"FILTER_ORDER {order}: the compiled targeting tries {', '.join(KEYED)} "
                               "(in any order) first, then min_quality, schedule and rules")
    if not all(type(code) is int and 0 <= code < 256 for code in [terms.OPEN, *codes]) or terms.OPEN in codes:
        raise terms.TermsError(f"OPEN {terms.OPEN!r} and BLOCK_REASON {codes!r}: block codes are "
                               "distinct bytes, and open is not a block")
    for bit, name in enumerate(order[:n]):
        FAMILY[bit], listed_passes = KEYED[name]
        if listed_passes:
            INCLUDE |= 1 << bit
        else:
            EXCLUDE |= 1 << bit
    MIN_QUALITY, SCHEDULE = n, n + 1
    FIRST_BLOCK = SCHEDULE + 1
    R_OVER_MAX = FIRST_BLOCK + len(codes)
    REASON_KINDS = R_OVER_MAX + 1
    for b in range(256):
        BLOCK_KIND[b] = NOT_A_BLOCK
    BLOCK_KIND[terms.OPEN] = PASS
    for kind, code in enumerate(codes, FIRST_BLOCK):
        BLOCK_KIND[code] = kind
    kind_reasons = (*[terms.FILTERED + name for name in order[:FIRST_BLOCK]], *codes.values(), terms.OVER_MAX)
    return order[:n], kind_reasons, terms.FILTERED + terms.RULE


cdef tuple KEYED_ORDER, KIND_REASONS
cdef str RULE_REASON
KEYED_ORDER, KIND_REASONS, RULE_REASON = read_terms(targeting_terms)

# Rule ops and value kinds.
cdef enum:
    OP_EQ, OP_NE, OP_IN, OP_NOT_IN, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_BETWEEN, OP_EXISTS
cdef dict OPS = {"eq": OP_EQ, "ne": OP_NE, "in": OP_IN, "not_in": OP_NOT_IN, "gt": OP_GT, "gte": OP_GTE,
                "lt": OP_LT, "lte": OP_LTE, "between": OP_BETWEEN, "exists": OP_EXISTS}
cdef enum:
    K_PYTHON, K_STR, K_NUM, K_BOOL          # K_PYTHON: only the reference can compare it
cdef enum:
    F_UNSEEN, F_MISSING, F_SCALAR, F_LIST, F_PYTHON
cdef enum:
    UNKNOWN, PASSES, FAILS

# Integers beyond 2**53 do not survive the trip to double; they go to the reference.
cdef int64_t EXACT = 1LL << 53
cdef int WORDS_PER_WEEK = (targeting_terms.MINUTES_PER_WEEK + 63) // 64  # a schedule bitmap packed to bits


ctypedef struct Camp:       # 32 bytes: the loop streams through all of them
    int64_t min_quality
    int32_t number          # in the index (blocks, last_bids, Selection)
    uint16_t present        # bit per filter given, FILTER_ORDER numbering
    int16_t zone            # time zone slot of its schedule
    int32_t week            # first bitmap word of its schedule
    int32_t rules, n_rules  # into Core.rule_preds and Core.rule_reasons
    uint32_t rank           # 0 for the highest priority in the index, 1 for the next, ...

ctypedef struct Value:
    int32_t kind
    int32_t sid             # interned string id; -1: a string no rule mentions
    double num

ctypedef struct Pred:
    int32_t field, op
    int32_t first, count    # target values in Core.values
    bint python             # a target the C code does not compare: ask the reference
    bint want               # exists: whether the attribute must be there

ctypedef struct Seen:
    int32_t state, first, count

ctypedef struct Ping:
    # Per-call scratch: the ping's attribute values as they get looked at, and the
    # campaigns per reason slot, slots listed in the order they first occur.
    Seen* fields
    uint8_t* preds
    Value* items
    Py_ssize_t n_items, cap_items
    int32_t* counts
    int32_t* order
    Py_ssize_t n_order


cdef Value classify(object x, dict strings, bint intern):
    """A scalar as the C code compares it; the kinds keep ``true`` apart from ``1``."""
    cdef Value v
    cdef int overflow
    cdef long long n
    v.kind, v.sid, v.num = K_PYTHON, -1, 0.0
    t = type(x)
    if t is bool:
        v.kind, v.num = K_BOOL, (1.0 if x else 0.0)
    elif t is int:
        n = PyLong_AsLongLongAndOverflow(x, &overflow)
        if not overflow and -EXACT <= n <= EXACT:
            v.kind, v.num = K_NUM, <double>n
    elif t is float:
        v.kind, v.num = K_NUM, x
    elif t is str:
        v.kind = K_STR
        v.sid = strings.setdefault(x, len(strings)) if intern else strings.get(x, -1)
    return v


cdef inline bint same(const Value* a, const Value* b) noexcept nogil:
    if a.kind != b.kind:
        return False
    return a.sid == b.sid if a.kind == K_STR else a.num == b.num


cdef inline void put(list lst, Py_ssize_t i, PyObject* item) noexcept:
    incref(item)
    list_set(lst, i, item)


cdef int64_t epoch_minute(double now) noexcept nogil:
    """The UTC minute ``datetime.fromtimestamp(now)`` falls in: it rounds to the microsecond
    half-even first, so 59.9999996 is already the next minute. Every zone's offset has been
    a whole number of minutes since 1972, so a zone's minute of the week is fixed within it."""
    cdef double whole
    cdef double micro = nearbyint(modf(now, &whole) * 1e6)
    if micro >= 1e6:
        whole += 1
    elif micro < 0:
        whole -= 1
    cdef int64_t second = <int64_t>whole
    return second // 60 - (1 if second % 60 < 0 else 0)


cdef void sort_keys(uint64_t* keys, uint64_t* spare, Py_ssize_t n, int low, int high) noexcept nogil:
    """Ascending by bits ``low``..``high`` of the keys, stable (insertion sort when short,
    else least-significant-digit radix, digits of at most 11 bits), so the bits below
    ``low`` ride along in their order."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t counts[1 << 11]
    cdef uint64_t x, mask
    if n <= 32:
        for i in range(1, n):
            x = keys[i]
            j = i
            while j > 0 and keys[j - 1] >> low > x >> low:
                keys[j] = keys[j - 1]
                j -= 1
            keys[j] = x
        return
    cdef int passes = (high - low + 10) // 11, shift = low, width, p
    for p in range(passes):
        width = (high - shift + (passes - p) - 1) // (passes - p)
        mask = (1ULL << width) - 1
        memset(counts, 0, (mask + 1) * sizeof(Py_ssize_t))
        for i in range(n):
            counts[(keys[i] >> shift) & mask] += 1
        j = 0
        for i in range(mask + 1):
            j, counts[i] = j + counts[i], j
        for i in range(n):
            spare[counts[(keys[i] >> shift) & mask]] = keys[i]
            counts[(keys[i] >> shift) & mask] += 1
        keys, spare = spare, keys
        shift += width
    if passes % 2:
        memcpy(spare, keys, n * sizeof(uint64_t))


cdef inline void sift_down(uint64_t* heap, Py_ssize_t at, Py_ssize_t n) noexcept nogil:
    cdef uint64_t x = heap[at]
    cdef Py_ssize_t child = 2 * at + 1
    while child < n:
        if child + 1 < n and heap[child + 1] > heap[child]:
            child += 1
        if heap[child] <= x:
            break
        heap[at] = heap[child]
        at, child = child, 2 * child + 1
    heap[at] = x


cdef void smallest_keys(uint64_t* keys, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The ``k`` (>= 1) smallest keys into keys[:k], ascending: a max-heap of the best so
    far, which most keys only compare with its top, then heap-sorted. Cheaper than
    ordering all ``n`` when only the best ``k`` are wanted."""
    cdef Py_ssize_t i
    cdef uint64_t top
    for i in range(k // 2 - 1, -1, -1):
        sift_down(keys, i, k)
    for i in range(k, n):
        if keys[i] < keys[0]:
            keys[0] = keys[i]
            sift_down(keys, 0, k)
    for i in range(k - 1, 0, -1):
        top = keys[0]
        keys[0], keys[i] = keys[i], top
        sift_down(keys, 0, i)


def _targets(int op, value):
    """The values a rule compares with, or None for a shape only the reference handles."""
    if op == OP_EXISTS:
        return []
    if op in (OP_EQ, OP_NE):
        return None if isinstance(value, list) else [value]
    if op in (OP_IN, OP_NOT_IN):
        return value if isinstance(value, list) else None
    if op == OP_BETWEEN:
        ok = isinstance(value, list) and len(value) == 2 and all(type(x) in (int, float) for x in value)
        return value if ok else None
    return [value] if type(value) in (int, float) else None


def _typed(value):
    """A dict key for a rule value that tells ``true``, ``1`` and ``1.0`` apart."""
    if isinstance(value, list):
        return tuple(_typed(x) for x in value)
    return (type(value), value)


cdef class _Vertical:
    """One vertical's campaigns as C structs, plus the inverted lists of keyed filters."""

    cdef Camp* camps
    cdef Py_ssize_t n
    cdef list keyed            # per family: key -> offset in ``postings``
    cdef int32_t* postings     # at an offset: count, then (position << 4 | filter bit) entries
    cdef list tuples           # owns the (number, reason) tuples Selection.reasons is made of
    cdef PyObject** reasons    # [kind * n + position]: kind-major, so that one ping's
                               # reasons are read as a few ascending streams

    def __dealloc__(self):
        PyMem_Free(self.camps)
        PyMem_Free(self.postings)
        PyMem_Free(self.reasons)

    cdef void _mark(self, int family, object key, uint16_t* hits):
        """Set the filter bits of every campaign whose keyed filter lists ``key``."""
        cdef PyObject* at = PyDict_GetItem(self.keyed[family], key)
        if at == NULL:
            return
        cdef int32_t* entry = self.postings + <Py_ssize_t><object>at
        cdef int32_t* end = entry + 1 + entry[0]
        entry += 1
        while entry < end:
            hits[entry[0] >> 4] |= 1 << (entry[0] & 15)
            entry += 1

    cdef _set_reasons(self, tuple texts):
        """Every (number, reason) tuple a ping can report, made kind after kind."""
        self.reasons = <PyObject**>PyMem_Calloc(REASON_KINDS * self.n + 1, sizeof(PyObject*))
        if self.reasons == NULL:
            raise MemoryError
        self.tuples = []
        cdef Py_ssize_t kind, pos
        for kind in range(REASON_KINDS):
            for pos in range(self.n):
                if kind >= FIRST_BLOCK or self.camps[pos].present >> kind & 1:
                    reason = (self.camps[pos].number, texts[kind])
                    self.tuples.append(reason)
                    self.reasons[kind * self.n + pos] = <PyObject*>reason

    cdef _set_postings(self, list lists):
        cdef Py_ssize_t size = sum(1 + len(entries) for family in lists for entries in family.values())
        self.postings = <int32_t*>PyMem_Malloc((size + 1) * sizeof(int32_t))
        if self.postings == NULL:
            raise MemoryError
        cdef Py_ssize_t at = 0
        self.keyed = []
        for family in lists:
            offsets = {}
            for key, entries in family.items():
                offsets[key] = at
                self.postings[at] = len(entries)
                for e in entries:
                    at += 1
                    self.postings[at] = e
                at += 1
            self.keyed.append(offsets)


cdef class Core:
    """Built once per config from a ``targeting.CoreInput``; ``select`` is its hot path."""

    cdef object selection, reference_rule, reference_best_first, minute_of_week
    cdef tuple slot_texts      # the reason counted in each slot: the kinds, then rule fields
    cdef dict rule_texts       # field -> "filtered:rule:<field>"
    cdef list rule_tuples
    cdef PyObject** rule_reasons  # one tuple per rule reference, beside rule_preds
    cdef dict verticals
    cdef Py_ssize_t n_campaigns, max_buyers, detail_limit
    cdef int rank_bits
    # rules
    cdef dict strings
    cdef list field_names, rules
    cdef Pred* preds
    cdef Value* values
    cdef int32_t* rule_preds
    cdef Py_ssize_t n_preds, n_rule_refs
    # schedules
    cdef list zones
    cdef uint64_t* weeks
    cdef int64_t* zone_minute   # per zone: the epoch minute its minute of the week is for
    cdef int32_t* zone_mow

    def __cinit__(self):
        self.preds = NULL
        self.values = NULL
        self.rule_preds = NULL
        self.rule_reasons = NULL
        self.weeks = NULL
        self.zone_minute = NULL
        self.zone_mow = NULL

    def __dealloc__(self):
        PyMem_Free(self.preds)
        PyMem_Free(self.values)
        PyMem_Free(self.rule_preds)
        PyMem_Free(self.rule_reasons)
        PyMem_Free(self.weeks)
        PyMem_Free(self.zone_minute)
        PyMem_Free(self.zone_mow)

    def __init__(self, inputs):
        self.selection = inputs.selection
        self.reference_rule = inputs.rule_passes
        self.reference_best_first = inputs.best_first
        self.minute_of_week = inputs.minute_of_week
        self.n_campaigns = len(inputs.campaigns)
        self.max_buyers = inputs.max_buyers
        self.detail_limit = inputs.detail_limit
        self.strings = {}
        self.field_names = []
        self.rules = []
        self.zones = []
        campaigns = inputs.campaigns
        priorities = sorted({c.priority for c in campaigns}, reverse=True)
        ranks = {p: r for r, p in enumerate(priorities)}
        self.rank_bits = len(priorities).bit_length()
        weeks = self._build_schedules(inputs.schedules)
        pred_of = self._build_rules(campaigns)
        self.slot_texts = (*KIND_REASONS, *[self.rule_texts[name] for name in self.field_names])
        self.verticals = {name: self._build_vertical(numbers, campaigns, ranks, weeks, pred_of)
                          for name, numbers in inputs.by_vertical.items()}

    def select(self, ping, seller_id, now, const unsigned char[::1] blocks, last_bids):
        """``Index.select``: the same eligible list and the same reasons or counts, in the same order."""
        cdef _Vertical v = self.verticals.get(ping.vertical)
        if v is None:
            return self.selection()
        if blocks.shape[0] < self.n_campaigns or len(last_bids) < self.n_campaigns:
            raise IndexError("blocks and last_bids must cover every campaign of the index")
        cdef Py_ssize_t n = v.n, n_slots = len(self.slot_texts)
        cdef Ping scratch
        cdef char* block = <char*>PyMem_Malloc(
            (2 * n + 2 * n_slots) * sizeof(int32_t) + n * sizeof(uint16_t)
            + len(self.field_names) * sizeof(Seen) + self.n_preds + 8)
        if block == NULL:
            raise MemoryError
        cdef Seen* fields = <Seen*>block
        cdef int32_t* failed = <int32_t*>(fields + len(self.field_names))
        cdef int32_t* passing = failed + n
        scratch.counts = passing + n
        scratch.order = scratch.counts + n_slots
        cdef uint16_t* hits = <uint16_t*>(scratch.order + n_slots)
        scratch.fields, scratch.preds = fields, <uint8_t*>(hits + n)
        scratch.items, scratch.n_items, scratch.cap_items, scratch.n_order = NULL, 0, 0, 0
        memset(fields, 0, len(self.field_names) * sizeof(Seen))
        memset(scratch.counts, 0, n_slots * sizeof(int32_t))
        memset(hits, 0, n * sizeof(uint16_t) + self.n_preds)
        try:
            self._mark_keys(v, ping, seller_id, hits)
            return self._select(v, ping, now, blocks, last_bids, &scratch, failed, passing, hits)
        finally:
            PyMem_Free(scratch.items)
            PyMem_Free(block)

    cdef void _mark_keys(self, _Vertical v, object ping, object seller_id, uint16_t* hits):
        """Per ping, one lookup per key instead of one test per campaign and keyed filter."""
        state = ping.state
        if isinstance(state, str):
            v._mark(STATE, state.upper(), hits)
        zip5 = ping.zip[:5]
        v._mark(ZIP, zip5, hits)
        for length in range(len(zip5) + 1):
            v._mark(ZIP_PREFIX, zip5[:length], hits)
        v._mark(SELLER, seller_id, hits)
        source = ping.source_id
        if isinstance(source, str):
            v._mark(SOURCE, source, hits)

    cdef object _select(self, _Vertical v, object ping, object now, const unsigned char[::1] blocks,
                        object last_bids, Ping* scratch, int32_t* failed, int32_t* passing,
                        const uint16_t* hits):
        quality = ping.quality_score
        cdef bint has_quality = isinstance(quality, int)
        cdef int64_t score = quality if has_quality else 0
        attributes = ping.attributes if isinstance(ping.attributes, dict) else None
        cdef int64_t minute = epoch_minute(now) if isfinite(now) else INT64_MIN + 1
        cdef Py_ssize_t pos, j, n_failed = 0, n_passing = 0
        cdef const Camp* c
        cdef unsigned int fails, present, b
        cdef int verdict, m, kind, slot
        # The layout read at import, as locals the loop keeps in registers.
        cdef unsigned int listed_passes = INCLUDE, listed_fails = EXCLUDE
        cdef unsigned int quality_bit = 1U << MIN_QUALITY, schedule_bit = 1U << SCHEDULE
        cdef int min_quality = MIN_QUALITY, schedule = SCHEDULE
        cdef const int16_t* block_kind = BLOCK_KIND
        for pos in range(v.n):
            c = &v.camps[pos]
            b = blocks[c.number]
            present = c.present
            fails = present & ((listed_passes & ~hits[pos]) | (listed_fails & hits[pos]))
            kind = block_kind[b]
            if kind != PASS:
                if kind == NOT_A_BLOCK:
                    raise KeyError(b)
            elif fails:
                kind = lowest_bit(fails)
            elif present & quality_bit and (not has_quality or score < c.min_quality):
                kind = min_quality
            elif present & schedule_bit:
                m = self._minute_of_week(c.zone, minute, now)
                if not self.weeks[c.week + (m >> 6)] >> (m & 63) & 1:
                    kind = schedule
            if kind == PASS:
                for j in range(c.rules, c.rules + c.n_rules):
                    verdict = scratch.preds[self.rule_preds[j]]
                    if verdict == UNKNOWN:
                        verdict = self._judge(self.rule_preds[j], scratch, attributes)
                        scratch.preds[self.rule_preds[j]] = verdict
                    if verdict == FAILS:
                        kind = RULE_FAILED - j
                        break
            if kind == PASS:
                passing[n_passing] = pos
                n_passing += 1
            else:  # where its reason is; fetched only once the loop is done (it misses the cache)
                failed[n_failed] = kind * v.n + pos if kind >= 0 else kind
                n_failed += 1
                slot = kind if kind >= 0 else REASON_KINDS + self.preds[self.rule_preds[RULE_FAILED - kind]].field
                if scratch.counts[slot] == 0:
                    scratch.order[scratch.n_order] = slot
                    scratch.n_order += 1
                scratch.counts[slot] += 1
        cdef Py_ssize_t k = min(n_passing, self.max_buyers)
        cdef bint detailed = n_failed + n_passing - k <= self.detail_limit
        self._best_first(v, passing, n_passing, n_passing if detailed else k, last_bids)
        eligible = PyList_New(k)
        cdef object number
        for j in range(k):
            number = v.camps[passing[j]].number
            put(eligible, j, <PyObject*>number)
        if not detailed:
            counts = {self.slot_texts[scratch.order[j]]: scratch.counts[scratch.order[j]]
                      for j in range(scratch.n_order)}
            if n_passing > k:
                counts[self.slot_texts[R_OVER_MAX]] = n_passing - k
            return self.selection(eligible, [], counts)
        reasons = PyList_New(n_failed + n_passing - k)
        for j in range(n_failed):
            put(reasons, j, v.reasons[failed[j]] if failed[j] >= 0 else self.rule_reasons[RULE_FAILED - failed[j]])
        cdef PyObject** over_max = v.reasons + R_OVER_MAX * v.n
        for j in range(k, n_passing):
            put(reasons, n_failed + j - k, over_max[passing[j]])
        return self.selection(eligible, reasons, {})

    cdef int _minute_of_week(self, int zone, int64_t minute, object now) except -1:
        """Asks the reference once per zone and UTC minute, for all pings in that minute."""
        if self.zone_minute[zone] != minute:
            self.zone_mow[zone] = self.minute_of_week(now, self.zones[zone])
            self.zone_minute[zone] = minute
        return self.zone_mow[zone]

    cdef int _judge(self, int32_t p, Ping* scratch, object attributes) except -1:
        """One predicate for this ping (each is judged at most once per ping)."""
        cdef const Pred* pred = &self.preds[p]
        cdef Seen* seen = &scratch.fields[pred.field]
        if seen.state == F_UNSEEN:
            self._look(seen, self.field_names[pred.field], scratch, attributes)
        if pred.op == OP_EXISTS:
            return PASSES if (seen.state != F_MISSING) == pred.want else FAILS
        if pred.python or seen.state == F_PYTHON:
            return PASSES if self.reference_rule(self.rules[p], attributes) else FAILS
        if seen.state == F_MISSING:
            return FAILS
        cdef const Value* items = scratch.items + seen.first
        cdef const Value* targets = self.values + pred.first
        cdef Py_ssize_t i, t
        cdef bint hit = False
        cdef double x
        if pred.op <= OP_NOT_IN:  # any element against any target
            for i in range(seen.count):
                for t in range(pred.count):
                    hit = hit or same(&items[i], &targets[t])
            return PASSES if hit == (pred.op == OP_EQ or pred.op == OP_IN) else FAILS
        if seen.state != F_SCALAR or items[0].kind != K_NUM:
            return FAILS
        x = items[0].num
        if pred.op == OP_GT:
            hit = x > targets[0].num
        elif pred.op == OP_GTE:
            hit = x >= targets[0].num
        elif pred.op == OP_LT:
            hit = x < targets[0].num
        elif pred.op == OP_LTE:
            hit = x <= targets[0].num
        else:
            hit = targets[0].num <= x <= targets[1].num
        return PASSES if hit else FAILS

    cdef int _look(self, Seen* seen, str name, Ping* scratch, object attributes) except -1:
        """Classify the ping's value of one attribute, once, the first time a rule needs it."""
        seen.state = F_MISSING
        cdef PyObject* at = NULL if attributes is None else PyDict_GetItem(attributes, name)
        if at == NULL:
            return 0
        value = <object>at
        values = value if type(value) is list else (value,)
        cdef Py_ssize_t count = len(values)
        if scratch.n_items + count > scratch.cap_items:
            scratch.cap_items = 2 * (scratch.n_items + count)
            grown = <Value*>PyMem_Realloc(scratch.items, scratch.cap_items * sizeof(Value))
            if grown == NULL:
                raise MemoryError
            scratch.items = grown
        seen.state = F_LIST if type(value) is list else F_SCALAR
        seen.first, seen.count = scratch.n_items, count
        for x in values:
            scratch.items[scratch.n_items] = classify(x, self.strings, False)
            if scratch.items[scratch.n_items].kind == K_PYTHON:
                seen.state = F_PYTHON
            scratch.n_items += 1
        return 0

    cdef int _best_first(self, _Vertical v, int32_t* passing, Py_ssize_t n, Py_ssize_t limit,
                         object last_bids) except -1:
        """``Index.best_first`` over positions into passing[:limit]: all ``n`` by one stable
        sort of packed integer keys, or only the best ``limit`` of them, unordered past
        that; the reference ranks whatever does not pack into 64 bits."""
        if n < 2:
            return 0
        cdef uint64_t* keys = <uint64_t*>PyMem_Malloc(2 * n * sizeof(uint64_t))
        if keys == NULL:
            raise MemoryError
        cdef int pos_bits = bit_length64(v.n - 1), bits
        cdef Py_ssize_t i
        try:
            try:
                bits = self._pack(v, passing, n, last_bids, keys, pos_bits)
            except (OverflowError, TypeError):  # a last bid that is not a 64-bit int
                bits = -1
            if bits < 0:
                return self._python_best_first(v, passing, n, limit, last_bids)
            if limit < n:  # keys are distinct (the position is in them): ties cannot reorder
                smallest_keys(keys, n, limit)
                n = limit
            else:
                sort_keys(keys, keys + n, n, pos_bits, bits)
            for i in range(n):
                passing[i] = keys[i] & ((1ULL << pos_bits) - 1)
        finally:
            PyMem_Free(keys)
        return 0

    cdef int _pack(self, _Vertical v, const int32_t* passing, Py_ssize_t n, object last_bids,
                   uint64_t* keys, int pos_bits) except -2:
        """keys[i] = (priority rank, highest bid - last bid, position), in as few bits as
        these campaigns need; returns the bit count, -1 beyond 64. Uses keys[n:2n] for bids."""
        cdef int64_t* bids = <int64_t*>(keys + n)
        cdef bint is_list = type(last_bids) is list
        cdef Py_ssize_t i, number
        for i in range(n):
            number = v.camps[passing[i]].number
            bids[i] = <object>list_get(last_bids, number) if is_list else last_bids[number]
        cdef int64_t low = bids[0], high = bids[0]
        for i in range(n):
            low, high = min(low, bids[i]), max(high, bids[i])
        cdef int bid_bits = bit_length64(<uint64_t>high - <uint64_t>low) if high != low else 0
        if self.rank_bits + bid_bits + pos_bits > 64:
            return -1
        for i in range(n):
            keys[i] = ((<uint64_t>v.camps[passing[i]].rank << bid_bits | <uint64_t>high - <uint64_t>bids[i])
                       << pos_bits | <uint64_t>passing[i])
        return self.rank_bits + bid_bits + pos_bits

    cdef int _python_best_first(self, _Vertical v, int32_t* passing, Py_ssize_t n, Py_ssize_t limit,
                                object last_bids) except -1:
        position = {v.camps[passing[i]].number: passing[i] for i in range(n)}
        numbers = self.reference_best_first(list(position), last_bids, limit)
        for i, number in enumerate(numbers):
            passing[i] = position[number]
        return 0

    cdef dict _build_schedules(self, dict schedules):
        """Pack each distinct bitmap to bits; returns campaign number -> (zone slot, word)."""
        zone_slot, week_of, placed = {}, {}, {}
        for number, (tz, bitmap) in schedules.items():
            if id(bitmap) not in week_of:
                week_of[id(bitmap)] = len(week_of) * WORDS_PER_WEEK
            placed[number] = (zone_slot.setdefault(tz, len(zone_slot)), week_of[id(bitmap)])
        self.zones = list(zone_slot)
        self.weeks = <uint64_t*>PyMem_Calloc(len(week_of) * WORDS_PER_WEEK + 1, sizeof(uint64_t))
        self.zone_minute = <int64_t*>PyMem_Malloc((len(self.zones) + 1) * sizeof(int64_t))
        self.zone_mow = <int32_t*>PyMem_Malloc((len(self.zones) + 1) * sizeof(int32_t))
        if self.weeks == NULL or self.zone_minute == NULL or self.zone_mow == NULL:
            raise MemoryError
        for z in range(len(self.zones)):
            self.zone_minute[z] = INT64_MIN
        cdef const unsigned char[:] bits
        cdef Py_ssize_t m, word
        for number, (tz, bitmap) in schedules.items():
            word = placed[number][1]
            bits = bitmap
            for m in range(bits.shape[0]):
                if bits[m]:
                    self.weeks[word + (m >> 6)] |= 1ULL << (m & 63)
        return placed

    cdef dict _build_rules(self, list campaigns):
        """Distinct (field, op, value) rules become predicates; returns key -> predicate id."""
        pred_of, field_of = {}, {}
        for c in campaigns:
            for rule in c.filters.rules or ():
                key = (rule.field, rule.op, _typed(rule.value))
                if key not in pred_of:
                    pred_of[key] = len(self.rules)
                    self.rules.append(rule)
                    field_of.setdefault(rule.field, len(field_of))
        self.field_names = list(field_of)
        self.n_preds = len(self.rules)
        targets = [_targets(OPS[rule.op], rule.value) for rule in self.rules]
        n_refs = sum(len(c.filters.rules or ()) for c in campaigns)
        self.preds = <Pred*>PyMem_Malloc((self.n_preds + 1) * sizeof(Pred))
        self.values = <Value*>PyMem_Malloc((sum(len(t or ()) for t in targets) + 1) * sizeof(Value))
        self.rule_preds = <int32_t*>PyMem_Malloc((n_refs + 1) * sizeof(int32_t))
        self.rule_reasons = <PyObject**>PyMem_Malloc((n_refs + 1) * sizeof(PyObject*))
        if self.preds == NULL or self.values == NULL or self.rule_preds == NULL or self.rule_reasons == NULL:
            raise MemoryError
        self.rule_texts = {field: RULE_REASON + field for field in field_of}
        self.rule_tuples = []
        cdef Pred* pred
        cdef Py_ssize_t first = 0
        for p, rule in enumerate(self.rules):
            pred = &self.preds[p]
            pred.field, pred.op = field_of[rule.field], OPS[rule.op]
            pred.want = rule.value is not False
            pred.python = targets[p] is None
            pred.first, pred.count = first, len(targets[p] or ())
            for x in targets[p] or ():
                self.values[first] = classify(x, self.strings, True)
                pred.python |= self.values[first].kind == K_PYTHON
                first += 1
        return pred_of

    cdef _Vertical _build_vertical(self, list numbers, list campaigns, dict ranks, dict weeks,
                                   dict pred_of):
        cdef _Vertical v = _Vertical.__new__(_Vertical)
        cdef Camp* c
        v.n = len(numbers)
        v.camps = <Camp*>PyMem_Calloc(v.n + 1, sizeof(Camp))
        if v.camps == NULL:
            raise MemoryError
        lists = [{} for _ in range(N_FAMILIES)]
        for pos, number in enumerate(numbers):
            f = campaigns[number].filters
            c = &v.camps[pos]
            c.number, c.rank = number, ranks[campaigns[number].priority]
            for bit, name in enumerate(KEYED_ORDER):
                keys = getattr(f, name)
                if keys is not None:
                    c.present |= 1 << bit
                    family = lists[FAMILY[bit]]
                    for key in keys:
                        family.setdefault(key.upper() if FAMILY[bit] == STATE else key, []).append(pos << 4 | bit)
            if f.min_quality is not None:
                c.present |= 1 << MIN_QUALITY
                c.min_quality = f.min_quality
            if number in weeks:
                c.present |= 1 << SCHEDULE
                c.zone, c.week = weeks[number]
            c.rules, c.n_rules = self.n_rule_refs, len(f.rules or ())
            for rule in f.rules or ():
                self.rule_preds[self.n_rule_refs] = pred_of[(rule.field, rule.op, _typed(rule.value))]
                self.n_rule_refs += 1
        v._set_reasons(KIND_REASONS)
        for pos, number in enumerate(numbers):
            for j, rule in enumerate(campaigns[number].filters.rules or ()):
                reason = (number, self.rule_texts[rule.field])
                self.rule_tuples.append(reason)
                self.rule_reasons[v.camps[pos].rules + j] = <PyObject*>reason
        v._set_postings(lists)
        return v


ctypedef struct Entry:
    int64_t worth, priority  # worth: the cents, or cents x accept rate (ppm)
    uint64_t key            # the seeded tie-break, as targeting.tiebreak_keys
    Py_ssize_t at


cdef int by_rank(const void* a, const void* b) noexcept nogil:
    cdef const Entry* x = <const Entry*>a
    cdef const Entry* y = <const Entry*>b
    if x.worth != y.worth:
        return -1 if x.worth > y.worth else 1
    if x.priority != y.priority:
        return -1 if x.priority > y.priority else 1
    if x.key != y.key:
        return -1 if x.key < y.key else 1
    return -1 if x.at < y.at else (1 if x.at > y.at else 0)


cdef class Ranker:
    """``targeting.reference_rank`` over C integers, made with the reference ranker it hands
    the bids to whose numbers do not fit 64 bits (or are not ints), a product of cents and
    accept rate included."""

    cdef object reference

    def __init__(self, reference):
        self.reference = reference

    def rank(self, bids, min_bid_cents, seed, accept_ppm=None):
        """``reference_rank(bids, min_bid_cents, seed, accept_ppm)``, the same answer."""
        bids = bids if type(bids) is list else list(bids)
        cdef Py_ssize_t n = len(bids), i, kept = 0, number
        cdef uint64_t state = seed & 0xFFFFFFFFFFFFFFFF, z
        cdef int64_t floor, cents, rate
        cdef bint expected = accept_ppm is not None
        cdef Py_ssize_t n_rates = len(accept_ppm) if type(accept_ppm) is list else -1
        cdef Entry* entries = <Entry*>PyMem_Malloc((n + 1) * sizeof(Entry))
        if entries == NULL:
            raise MemoryError
        dropped = []
        try:
            floor = min_bid_cents
            for i in range(n):
                bid = <object>list_get(bids, i)
                state += 0x9E3779B97F4A7C15ULL
                z = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9ULL
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
                cents, entries[kept].priority = bid.cents, bid.priority
                if cents <= 0 or cents < floor:
                    dropped.append(bid)
                    continue
                if expected:
                    campaign = bid.campaign
                    number = campaign if type(campaign) is int else -1
                    if 0 <= number < n_rates:
                        rate = <object>list_get(accept_ppm, number)
                    else:  # Python's indexing: what the reference does (an IndexError, a negative number)
                        rate = accept_ppm[campaign]
                    if mul_overflows(cents, rate, &entries[kept].worth):
                        raise OverflowError
                else:
                    entries[kept].worth = cents
                entries[kept].key, entries[kept].at = z ^ (z >> 31), i
                kept += 1
            qsort(entries, kept, sizeof(Entry), by_rank)
            ranked = PyList_New(kept)
            for i in range(kept):
                put(ranked, i, list_get(bids, entries[i].at))
            return ranked, dropped
        except (OverflowError, TypeError):
            return self.reference(bids, min_bid_cents, seed, accept_ppm)
        finally:
            PyMem_Free(entries)
