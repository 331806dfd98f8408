#!/usr/bin/env bash
# missive-crypto from the outside: every command, its errors, and that failures change nothing.
set -u
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
M=$(realpath "${1:?usage: test_tool.sh PATH_TO_MISSIVE_CRYPTO}")
V=$(cd "$(dirname "$0")" && pwd)/vectors/wycheproof
work=$(mktemp -d)
system_python
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

for cmd in keygen public fingerprint seal open verify payload-encode payload-decode attach-encrypt attach-decrypt vrf; do
    expect 0 "$cmd --help" -- "$M" "$cmd" --help
    grep -q "^usage: missive-crypto $cmd" out.txt && ok || bad "$cmd --help text"
done
expect 0 "--help" -- "$M" --help
expect 2 "no command" -- "$M"
expect 2 "unknown command" -- "$M" frobnicate
expect 2 "unknown option" -- "$M" seal --bogus
expect 2 "missing required option" -- "$M" seal --to x.pub
expect 2 "bad suite" -- "$M" keygen --out x.key --suite rot13
expect 2 "rsa bits on modern" -- "$M" keygen --out x.key --rsa-bits 2048
[ ! -e x.key ] && ok || bad "a refused keygen left a key file"

printf 'The quick brown fox \xe2\x9c\x93\n' > msg.txt
head -c 5000 /dev/urandom > big.bin
for suite in classic ecies modern; do
    expect 0 "$suite keygen alice" -- "$M" keygen --suite "$suite" --out "a-$suite.key" --public "a-$suite.pub"
    grep -q "^suite: $suite$" out.txt && ok || bad "$suite keygen prints its suite"
    expect 0 "$suite keygen bob" -- "$M" keygen --suite "$suite" --out "b-$suite.key" --public "b-$suite.pub"
    [ "$(stat -c %a "a-$suite.key")" = 600 ] && ok || bad "$suite key file mode"
    expect 1 "$suite keygen refuses to overwrite" -- "$M" keygen --suite "$suite" --out "a-$suite.key"
    expect 0 "$suite public" -- "$M" public --key "a-$suite.key" --out "a2-$suite.pub"
    cmp -s "a-$suite.pub" "a2-$suite.pub" && ok || bad "$suite public matches keygen's"
    "$M" fingerprint --in "a-$suite.key" > fp1.txt && "$M" fingerprint --in "a-$suite.pub" > fp2.txt
    cmp -s fp1.txt fp2.txt && grep -qE '^fingerprint: ([0-9a-f]{4} ){15}[0-9a-f]{4}$' fp1.txt && ok || bad "$suite fingerprint"

    for input in msg.txt big.bin; do
        expect 0 "$suite seal $input" -- "$M" seal --key "a-$suite.key" --to "b-$suite.pub" --in "$input" --out "$input.$suite.env"
        expect 0 "$suite open $input" -- "$M" open --key "b-$suite.key" --from "a-$suite.pub" --in "$input.$suite.env" --out "$input.$suite.out"
        cmp -s "$input" "$input.$suite.out" && ok || bad "$suite round trip of $input"
    done
    # a flipped byte, the wrong sender, the wrong recipient: exit 3 and no output file
    python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[len(b)//2]^=1; open(sys.argv[2],'wb').write(b)" "msg.txt.$suite.env" tampered.env
    expect 3 "$suite tampered" -- "$M" open --key "b-$suite.key" --from "a-$suite.pub" --in tampered.env --out t.out
    expect 3 "$suite wrong sender" -- "$M" open --key "b-$suite.key" --from "b-$suite.pub" --in "msg.txt.$suite.env" --out t.out
    expect 3 "$suite wrong recipient" -- "$M" open --key "a-$suite.key" --from "a-$suite.pub" --in "msg.txt.$suite.env" --out t.out
    [ ! -e t.out ] && ok || bad "$suite failed open left output"
    ls t.out.tmp* >/dev/null 2>&1 && bad "$suite left a temporary file" || ok
    grep -q "message could not be authenticated" err.txt && ok || bad "$suite uniform error text"
done
expect 0 "classic verify" -- "$M" verify --from a-classic.pub --in msg.txt.classic.env
expect 3 "classic verify wrong sender" -- "$M" verify --from b-classic.pub --in msg.txt.classic.env
expect 1 "modern verify is not possible outside" -- "$M" verify --from a-modern.pub --in msg.txt.modern.env
expect 1 "suites must match" -- "$M" seal --key a-modern.key --to b-classic.pub --in msg.txt
expect 1 "not a key file" -- "$M" seal --key msg.txt --to b-modern.pub --in msg.txt
expect 1 "not an identity" -- "$M" seal --key a-modern.key --to msg.txt --in msg.txt
expect 1 "missing file" -- "$M" open --key nope.key --from a-modern.pub --in x
expect 0 "classic 2048" -- "$M" keygen --suite classic --rsa-bits 2048 --out c2048.key --public c2048.pub
expect 0 "seal to 2048" -- "$M" seal --key a-classic.key --to c2048.pub --in msg.txt --out m2048.env
expect 0 "open at 2048" -- "$M" open --key c2048.key --from a-classic.pub --in m2048.env --out m2048.out
cmp -s msg.txt m2048.out && ok || bad "2048-bit round trip"

# payloads
expect 0 "payload-encode" -- "$M" payload-encode --text "lunch?" --participant alice@example.org --participant bob@example.org --group-name Team --out p.bin
expect 0 "payload-decode" -- "$M" payload-decode --in p.bin
python3 - out.txt <<'PY' && ok || bad "payload JSON content"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["kind"] == "message" and p["text"] == "lunch?", p
assert p["participants"] == ["alice@example.org", "bob@example.org"], p
assert p["group_name"] == "Team" and len(p["group_id"]) == 32 and len(p["message_id"]) == 32
PY
expect 2 "receipt without target" -- "$M" payload-encode --kind receipt-read
expect 0 "receipt with target" -- "$M" payload-encode --kind receipt-read --target 00112233445566778899aabbccddeeff --out r.bin
expect 2 "bad kind" -- "$M" payload-encode --kind shout --text x
expect 1 "decode garbage" -- "$M" payload-decode --in msg.txt

# attachments
head -c 300000 /dev/urandom > photo.jpg
expect 0 "attach-encrypt" -- "$M" attach-encrypt --in photo.jpg --out photo.enc
key=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['key'])" out.txt)
sha=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sha256'])" out.txt)
[ "$sha" = "$(sha256sum photo.enc | cut -d' ' -f1)" ] && ok || bad "attachment sha256 is of the ciphertext"
[ "$(stat -c %s photo.enc)" = 300000 ] && ok || bad "ciphertext size"
cmp -s photo.jpg photo.enc && bad "ciphertext equals plaintext" || ok
expect 0 "attach-decrypt" -- "$M" attach-decrypt --key "$key" --sha256 "$sha" --in photo.enc --out photo.out
cmp -s photo.jpg photo.out && ok || bad "attachment round trip"
python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[1000]^=0x40; open(sys.argv[1],'wb').write(b)" photo.enc
expect 3 "attach-decrypt of changed ciphertext" -- "$M" attach-decrypt --key "$key" --sha256 "$sha" --in photo.enc --out photo2.out
[ ! -e photo2.out ] && ok || bad "refused attachment left output"
expect 2 "attach-decrypt bad key hex" -- "$M" attach-decrypt --key zz --sha256 "$sha" --in photo.enc --out x

# ML-KEM-768 on files, checked against Wycheproof's first cases
wp() { # FILE TCID FIELD [OUT]: a case's hex field, or its bytes into OUT
    python3 - "$V/$1" "$2" "$3" "${4:-}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = next(t for g in d["testGroups"] for t in g["tests"] if t["tcId"] == int(sys.argv[2]))
if sys.argv[4]:
    open(sys.argv[4], "wb").write(bytes.fromhex(t[sys.argv[3]]))
else:
    print(t[sys.argv[3]])
PY
}
expect 0 "mlkem768 --help" -- "$M" mlkem768 --help
grep -q "^usage: missive-crypto mlkem768 keygen" out.txt && ok || bad "mlkem768 --help text"
expect 0 "mlkem768 keygen --seed" -- "$M" mlkem768 keygen --seed "$(wp mlkem_768_keygen_seed_test.json 1 seed)" --out kem.dk --public kem.ek
wp mlkem_768_keygen_seed_test.json 1 ek want.ek
wp mlkem_768_keygen_seed_test.json 1 dk want.dk
cmp -s kem.ek want.ek && cmp -s kem.dk want.dk && ok || bad "mlkem768 keygen from the seed of tcId 1"
[ "$(stat -c %a kem.dk)" = 600 ] && ok || bad "mlkem768 decapsulation key file mode"
wp mlkem_768_encaps_test.json 14 ek enc.ek
expect 0 "mlkem768 encaps --random" -- "$M" mlkem768 encaps enc.ek --random "$(wp mlkem_768_encaps_test.json 14 m)" --out enc.ct
wp mlkem_768_encaps_test.json 14 c want.ct
cmp -s enc.ct want.ct && ok || bad "mlkem768 encaps ciphertext of tcId 14"
[ "$(cat out.txt)" = "$(wp mlkem_768_encaps_test.json 14 K)" ] && ok || bad "mlkem768 encaps key of tcId 14: $(cat out.txt)"
# the decapsulation side of the same case: keys from its seed, then its ciphertext
expect 0 "mlkem768 keygen for decaps" -- "$M" mlkem768 keygen --seed "$(wp mlkem_768_test.json 2 seed)" --out dec.dk --public dec.ek
wp mlkem_768_test.json 2 c dec.ct
expect 0 "mlkem768 decaps" -- "$M" mlkem768 decaps dec.dk dec.ct
[ "$(cat out.txt)" = "$(wp mlkem_768_test.json 2 K)" ] && ok || bad "mlkem768 decaps key of tcId 2"
# fresh keys and randomness both ways, then a changed ciphertext: implicit rejection
expect 0 "mlkem768 keygen" -- "$M" mlkem768 keygen --out r.dk --public r.ek
expect 0 "mlkem768 encaps" -- "$M" mlkem768 encaps r.ek --out r.ct
sent=$(cat out.txt)
expect 0 "mlkem768 decaps round trip" -- "$M" mlkem768 decaps r.dk r.ct
[ "$(cat out.txt)" = "$sent" ] && [ ${#sent} = 64 ] && ok || bad "mlkem768 round trip"
python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[7]^=1; open(sys.argv[1],'wb').write(b)" r.ct
expect 0 "mlkem768 decaps of a changed ciphertext" -- "$M" mlkem768 decaps r.dk r.ct
[ "$(cat out.txt)" != "$sent" ] && ok || bad "a changed ciphertext gave the sender's key"
# refusals: nothing written
wp mlkem_768_encaps_test.json 2 ek overflow.ek
expect 1 "mlkem768 encaps to a key with a coefficient >= q" -- "$M" mlkem768 encaps overflow.ek --out no.ct
grep -q "not an ML-KEM-768 encapsulation key" err.txt && ok || bad "mlkem768 refused ek message"
head -c 1183 r.ek > short.ek
expect 1 "mlkem768 encaps to a short key" -- "$M" mlkem768 encaps short.ek --out no.ct
[ ! -e no.ct ] && ok || bad "a refused encaps left a ciphertext"
python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[2000]^=1; open(sys.argv[2],'wb').write(b)" r.dk bad.dk
expect 1 "mlkem768 decaps with a key whose ek does not match its hash" -- "$M" mlkem768 decaps bad.dk r.ct
head -c 1087 r.ct > short.ct
expect 3 "mlkem768 decaps of a short ciphertext" -- "$M" mlkem768 decaps r.dk short.ct
expect 2 "mlkem768 bad seed" -- "$M" mlkem768 keygen --seed abcd --out s.dk --public s.ek
expect 2 "mlkem768 bad randomness" -- "$M" mlkem768 encaps r.ek --random zz --out s.ct
expect 2 "mlkem768 unknown subcommand" -- "$M" mlkem768 sign r.dk
expect 2 "mlkem768 decaps with one file" -- "$M" mlkem768 decaps r.dk
expect 2 "mlkem768 keygen without --public" -- "$M" mlkem768 keygen --out s.dk
[ ! -e s.dk ] && [ ! -e s.ct ] && ok || bad "a usage error left a file"
expect 1 "mlkem768 keygen refuses to overwrite" -- "$M" mlkem768 keygen --out r.dk --public n.ek
[ ! -e n.ek ] && ok || bad "a refused keygen left an encapsulation key"

# the VRF: RFC 9381 Appendix B.3, Example 17, through the tool; then a fresh key
echo 4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb > rfc.vsk
echo 3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c > rfc.vpk
rfc_pi=f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02
rfc_beta=eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031
chmod 644 rfc.vsk
expect 0 "vrf prove (RFC 9381 example 17)" -- "$M" vrf prove rfc.vsk 72 --hex
grep -q "rfc.vsk is readable by others" err.txt && ok || bad "vrf prove warns of a secret key others can read"
chmod 600 rfc.vsk
grep -qx "pi: $rfc_pi" out.txt && grep -qx "beta: $rfc_beta" out.txt && ok || bad "vrf prove gives the RFC's pi and beta"
expect 0 "vrf verify (RFC 9381 example 17)" -- "$M" vrf verify rfc.vpk 72 "$rfc_pi" --hex
grep -qx "proof: valid" out.txt && grep -qx "beta: $rfc_beta" out.txt && ok || bad "vrf verify prints the RFC's beta"
expect 3 "vrf verify of another alpha" -- "$M" vrf verify rfc.vpk 73 "$rfc_pi" --hex
grep -q "proof is not valid" err.txt && ! grep -q beta out.txt && ok || bad "vrf refusal text"
# the same key and alpha in the ELL2 suite: RFC 9381 Appendix B.4, Example 20
ell2_pi=47b327393ff2dd81336f8a2ef10339112401253b3c714eeda879f12c509072ef055b48372bb82efbdce8e10c8cb9a2f9d60e93908f93df1623ad78a86a028d6bc064dbfc75a6a57379ef855dc6733801
ell2_beta=38561d6b77b71d30eb97a062168ae12b667ce5c28caccdf76bc88e093e4635987cd96814ce55b4689b3dd2947f80e59aac7b7675f8083865b46c89b2ce9cc735
expect 0 "vrf prove --suite ell2 (RFC 9381 example 20)" -- "$M" vrf prove rfc.vsk 72 --hex --suite ell2
grep -qx "pi: $ell2_pi" out.txt && grep -qx "beta: $ell2_beta" out.txt && ok || bad "vrf prove --suite ell2 gives the RFC's pi and beta"
expect 0 "vrf verify --suite ell2" -- "$M" vrf verify rfc.vpk 72 "$ell2_pi" --hex --suite ell2
grep -qx "beta: $ell2_beta" out.txt && ok || bad "vrf verify --suite ell2 prints the RFC's beta"
expect 3 "an ELL2 proof is no TAI proof" -- "$M" vrf verify rfc.vpk 72 "$ell2_pi" --hex
expect 2 "vrf unknown suite" -- "$M" vrf prove rfc.vsk 72 --suite p256
expect 0 "vrf keygen" -- "$M" vrf keygen --out v.key --public v.pub
[ "$(stat -c %a v.key)" = 600 ] && grep -qx "public key: $(cat v.pub)" out.txt && ok || bad "vrf keygen files"
expect 1 "vrf keygen refuses to overwrite" -- "$M" vrf keygen --out v.key
expect 2 "vrf keygen without --out" -- "$M" vrf keygen
expect 0 "vrf prove" -- "$M" vrf prove v.key alice@example.org
pi=$(sed -n 's/^pi: //p' out.txt)
beta=$(sed -n 's/^beta: //p' out.txt)
expect 0 "vrf verify" -- "$M" vrf verify v.pub alice@example.org "$pi"
grep -qx "beta: $beta" out.txt && ok || bad "vrf verify gives prove's beta"
flipped=$(python3 -c "import sys; b=bytearray.fromhex(sys.argv[1]); b[50]^=4; print(b.hex())" "$pi")
expect 3 "vrf verify of a changed proof" -- "$M" vrf verify v.pub alice@example.org "$flipped"
expect 3 "vrf verify under another key" -- "$M" vrf verify rfc.vpk alice@example.org "$pi"
expect 2 "vrf verify of a short proof" -- "$M" vrf verify v.pub alice@example.org "${pi:2}"
expect 2 "vrf alpha that is not hex" -- "$M" vrf prove v.key xyz --hex
expect 1 "vrf key file that is not a key" -- "$M" vrf prove msg.txt alice@example.org
expect 2 "vrf without a subcommand" -- "$M" vrf
expect 2 "vrf unknown subcommand" -- "$M" vrf frobnicate
expect 2 "vrf prove with too many arguments" -- "$M" vrf prove v.key a b c

finish
