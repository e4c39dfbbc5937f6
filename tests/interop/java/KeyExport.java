// Writes the private key of one keystore entry as a PKCS#8 PEM file, so that the same identity
// keytool made for Flume can be served by `flume-ship collect --tls-key` (keytool itself cannot
// export private keys). Run as a single-file program: java KeyExport.java KEYSTORE PASSWORD ALIAS OUT
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Key;
import java.security.KeyStore;
import java.util.Base64;

public class KeyExport {
    public static void main(String[] args) throws Exception {
        char[] password = args[1].toCharArray();
        // getInstance(File, ...) detects JKS or PKCS12 from the file itself.
        KeyStore ks = KeyStore.getInstance(new File(args[0]), password);
        Key key = ks.getKey(args[2], password);
        if (key == null || !"PKCS#8".equals(key.getFormat())) {
            throw new IllegalStateException("no PKCS#8 private key under alias " + args[2]);
        }
        String b64 = Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII))
                .encodeToString(key.getEncoded());
        String pem = "-----BEGIN PRIVATE KEY-----\n" + b64 + "\n-----END PRIVATE KEY-----\n";
        Files.writeString(Path.of(args[3]), pem, StandardCharsets.US_ASCII);
    }
}
