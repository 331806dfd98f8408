# bash completion for missive, missived, missive-admin, missive-audit, missive-crypto and
# missive-bench.
# Install as /usr/share/bash-completion/completions/missive (and link the other names),
# or source it from ~/.bashrc.

_missive_accounts()
{
    local dir=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/missive}
    local d
    for d in "$dir"/*/state.db; do
        [ -e "$d" ] || continue
        d=${d%/state.db}
        printf '%s\n' "${d##*/}"
    done
}

_missive()
{
    local cur prev words cword
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="register link devices contacts groups send receive history read typing timer
        edit unsend edits windows react verify fingerprint backup restore daemon web chat log-head
        sync block unblock blocked requests settings report conversations profile password leave account
        handles username"
    local global="--account --data-dir -o --passphrase-file --password-file
        --backup-passphrase-file --help"
    local command="" data_dir="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --data-dir) data_dir=${COMP_WORDS[i + 1]} ;;
        --account | -o | --passphrase-file | --password-file | --backup-passphrase-file) ((i++)) ;;
        -*) ;;
        *) command=${COMP_WORDS[i]}; break ;;
        esac
    done
    case $prev in
    --account)
        mapfile -t COMPREPLY < <(compgen -W "$(_missive_accounts "$data_dir")" -- "$cur")
        return ;;
    -o) mapfile -t COMPREPLY < <(compgen -W "json text" -- "$cur"); return ;;
    --suite) mapfile -t COMPREPLY < <(compgen -W "modern ecies classic" -- "$cur"); return ;;
    --approval) mapfile -t COMPREPLY < <(compgen -W "on off" -- "$cur"); return ;;
    --compat)
        mapfile -t COMPREPLY < <(compgen -W "modern ecies classic classic,ecies ecies,classic" -- "$cur")
        return ;;
    --data-dir) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
    --file | --passphrase-file | --password-file | --backup-passphrase-file | --socket | --avatar | \
        --tls-cert | --tls-key | --png | --image)
        mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    esac
    if [ -z "$command" ]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$global" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        fi
        return
    fi
    local opts=""
    case $command in
    register) opts="--server --suite --compat --code --invite" ;;
    link) opts="--server --suite --compat --qr --png --wait --resume-history" ;;
    devices) opts="list approve remove add --image --yes --history --no-history --resume-history" ;;
    leave) opts="--yes" ;;
    account) opts="usage delete --yes" ;;
    handles) opts="list add verify remove --code --yes" ;;
    username) opts="show set remove" ;;
    password) opts="change reset --server --code" ;;
    contacts) opts="list add remove" ;;
    sync) opts="list set unset" ;;
    requests) opts="list accept delete block" ;;
    groups)
        opts="list create add remove rename promote demote leave accept invite join requests approve deny code"
        opts="$opts --approval --reset --off" ;;
    send) opts="--text --file --group --reply-to --from" ;;
    profile) opts="show set clear-avatar --name --avatar" ;;
    receive) opts="--wait" ;;
    history) opts="--group --search --limit --before" ;;
    read | typing | timer) opts="--group" ;;
    edit) opts="--text" ;;
    react) opts="--remove" ;;
    windows) opts="edit unsend" ;;
    conversations) opts="list mute unmute archive unarchive pin unpin --archived" ;;
    verify) opts="--qr --accept" ;;
    backup) opts="--kdf-memory --kdf-passes" ;;
    daemon) opts="--stdio --socket" ;;
    web) opts="--listen --open --tls-cert --tls-key --url --session-hours --idle-minutes --token-minutes" ;;
    report) opts="--reason --include-text" ;;
    settings)
        if [ "$prev" = get ] || [ "$prev" = set ]; then
            opts="read-receipts typing"
        elif [ "$prev" = read-receipts ] || [ "$prev" = typing ]; then
            opts="on off"
        else
            opts="list get set"
        fi ;;
    restore)
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "$opts --help" -- "$cur")
    [ "$command" = backup ] && [[ $cur != -* ]] && mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur")
}

_missived()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    case $prev in
    --config) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    --data-dir) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "--config --data-dir --check-config --help" -- "$cur")
}

_missive_admin()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    case $prev in
    --config) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    --data-dir) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
    -o) mapfile -t COMPREPLY < <(compgen -W "json text" -- "$cur"); return ;;
    suspend | unsuspend) return ;;
    backup | restore) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
    --to-postgres | --url | disconnect) return ;;
    --token-file) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "accounts suspend unsuspend reset-password delete reports invites stats expire log-rotate-key backup restore migrate reload disconnect --config
        --data-dir --to-postgres --url --token-file --yes -o --help" -- "$cur")
}

_missive_audit()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    case $prev in
    --state | --compare) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    --server | --fingerprint | --log-key | --start) return ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "--state --server --fingerprint --log-key --compare
        --print-head --start --quiet --help" -- "$cur")
}

_missive_crypto()
{
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "keygen public fingerprint seal open verify
            payload-encode payload-decode attach-encrypt attach-decrypt mlkem768 vrf mls --help" -- "$cur")
    elif [ "$COMP_CWORD" -eq 2 ] && [ "${COMP_WORDS[1]}" = mlkem768 ]; then
        mapfile -t COMPREPLY < <(compgen -W "keygen encaps decaps --help" -- "$cur")
    elif [ "$COMP_CWORD" -eq 2 ] && [ "${COMP_WORDS[1]}" = vrf ]; then
        mapfile -t COMPREPLY < <(compgen -W "keygen prove verify --help" -- "$cur")
    elif [ "$COMP_CWORD" -eq 2 ] && [ "${COMP_WORDS[1]}" = mls ]; then
        mapfile -t COMPREPLY < <(compgen -W "key-package create add remove update reinit
            reinit-group branch join process protect unprotect epoch --help" -- "$cur")
    elif [ "${COMP_WORDS[1]}" = mls ] && [ "${COMP_WORDS[COMP_CWORD - 1]}" = --suite ]; then
        mapfile -t COMPREPLY < <(compgen -W "1 3" -- "$cur")
    elif [ "${COMP_WORDS[1]}" = mls ] && [[ $cur == -* ]]; then
        local mls_opts="--state --help"
        case ${COMP_WORDS[2]} in
        key-package) mls_opts="--identity --state --out --private --suite --days --force --help" ;;
        create) mls_opts="--identity --state --suite --group-id --days --force --help" ;;
        add) mls_opts="--state --key-package --commit --welcome --private-message --no-path --force --help" ;;
        remove) mls_opts="--state --leaf --commit --private-message --force --help" ;;
        update) mls_opts="--state --commit --private-message --force --help" ;;
        reinit) mls_opts="--state --commit --group-id --suite --private-message --force --help" ;;
        reinit-group) mls_opts="--state --key-package --out --welcome --days --force --help" ;;
        branch) mls_opts="--state --key-package --out --welcome --group-id --days --force --help" ;;
        join) mls_opts="--welcome --key-package --private --state --tree --psk --resume --force --help" ;;
        process) mls_opts="--state --commit --proposal --psk --help" ;;
        protect) mls_opts="--state --in --text --out --force --help" ;;
        unprotect) mls_opts="--state --in --out --force --help" ;;
        esac
        mapfile -t COMPREPLY < <(compgen -W "$mls_opts" -- "$cur")
    elif [ "${COMP_WORDS[1]}" = vrf ] && [ "${COMP_WORDS[COMP_CWORD - 1]}" = --suite ]; then
        mapfile -t COMPREPLY < <(compgen -W "tai ell2" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}

_missive_bench()
{
    local cur=${COMP_WORDS[COMP_CWORD]}
    mapfile -t COMPREPLY < <(compgen -W "all crypto relay fanout mls idle queue storage cluster xmpp keydir --quick --runs
        --window --bin --server-cpu --loader-cpu --help" -- "$cur")
}

complete -F _missive missive
complete -F _missived missived
complete -F _missive_admin missive-admin
complete -F _missive_audit missive-audit
complete -F _missive_crypto missive-crypto
complete -F _missive_bench missive-bench
