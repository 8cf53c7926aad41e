// Mirrors migrations/sqlite. Times are epoch milliseconds.

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        sealed_key -> Text,
        state -> Text,
        balance -> Nullable<Double>,
        account_id -> Nullable<Text>,
        account_name -> Nullable<Text>,
        base_url -> Nullable<Text>,
        usage_count -> BigInt,
        last_used -> Nullable<BigInt>,
        last_checked -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        state_changed_at -> Nullable<BigInt>,
        created_at -> BigInt,
        gift_balance -> Nullable<Double>,
        charge_balance -> Nullable<Double>,
        account_label -> Nullable<Text>,
        key_hash -> Nullable<Text>,
    }
}

diesel::table! {
    cooldowns (account, model) {
        account -> Text,
        model -> Text,
        until_ms -> BigInt,
        strikes -> Integer,
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    request_logs (id) {
        id -> BigInt,
        created_at -> BigInt,
        key_id -> Nullable<BigInt>,
        key_masked -> Text,
        model -> Text,
        endpoint -> Text,
        status -> Integer,
        input_tokens -> BigInt,
        output_tokens -> BigInt,
        total_tokens -> BigInt,
        latency_ms -> BigInt,
        ttfb_ms -> Nullable<BigInt>,
        stream -> Bool,
        aborted -> Bool,
        attempts -> Integer,
        error -> Nullable<Text>,
        client -> Nullable<Text>,
        requested_model -> Nullable<Text>,
        call_id -> Nullable<Text>,
        usage_estimated -> Bool,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    resources (kind, resource_id) {
        kind -> Text,
        resource_id -> Text,
        key_id -> BigInt,
        account -> Nullable<Text>,
        created_at -> BigInt,
        client_id -> Nullable<BigInt>,
        lines -> Nullable<BigInt>,
        tokens -> Nullable<BigInt>,
    }
}

diesel::table! {
    client_leases (client_id, budget, period, instance) {
        client_id -> BigInt,
        budget -> Text,
        period -> BigInt,
        instance -> Text,
        granted -> BigInt,
        used -> BigInt,
        active -> Bool,
        short_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    client_ledger (client, slot) {
        client -> Text,
        slot -> BigInt,
        calls -> BigInt,
        tokens -> BigInt,
    }
}

diesel::table! {
    client_usage (instance, client_id, day) {
        instance -> Text,
        client_id -> BigInt,
        day -> BigInt,
        requests -> BigInt,
        tokens -> BigInt,
        updated_at -> BigInt,
        recent_requests -> BigInt,
    }
}

diesel::table! {
    clients (id) {
        id -> BigInt,
        name -> Text,
        key_hash -> Text,
        key_hint -> Text,
        models -> Nullable<Text>,
        rpm -> Nullable<Integer>,
        daily_requests -> Nullable<BigInt>,
        daily_tokens -> Nullable<BigInt>,
        expires_at -> Nullable<BigInt>,
        enabled -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    import_reports (token) {
        token -> Text,
        owner -> Text,
        created_at -> BigInt,
        html -> Text,
    }
}

diesel::table! {
    log_batches (writer, seq) {
        writer -> Text,
        seq -> BigInt,
        written_at -> BigInt,
    }
}

diesel::table! {
    login_failures (address) {
        address -> Text,
        failures -> Integer,
        window_start -> BigInt,
    }
}

diesel::table! {
    sessions (token_hash) {
        token_hash -> Text,
        csrf -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        generation -> Text,
    }
}

diesel::table! {
    usage_clients (hour, client) {
        hour -> BigInt,
        client -> Text,
        calls -> BigInt,
        tokens -> BigInt,
    }
}

diesel::table! {
    model_catalog (id) {
        id -> Text,
        fields -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    model_aliases (position) {
        position -> Integer,
        pattern -> Text,
        model -> Text,
    }
}

diesel::table! {
    usage_hourly (hour, model, key_id) {
        hour -> BigInt,
        model -> Text,
        key_id -> BigInt,
        calls -> Integer,
        errors -> Integer,
        input_tokens -> Integer,
        output_tokens -> Integer,
        latency_ms -> Integer,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    client_ledger,
    client_leases,
    client_usage,
    clients,
    cooldowns,
    import_reports,
    log_batches,
    login_failures,
    model_aliases,
    model_catalog,
    request_logs,
    resources,
    sessions,
    settings,
    usage_clients,
    usage_hourly
);
