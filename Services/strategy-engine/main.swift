import Foundation
FileHandle.standardError.write(Data("strategy-engine: not implemented yet\n".utf8))
exit(2)
